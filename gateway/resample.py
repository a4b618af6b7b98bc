"""PCM16 format conversion with PyAV (libswresample). Identity formats pass through without a copy."""

from __future__ import annotations

import av
import numpy as np

from providers.base import PcmFormat

_LAYOUTS = {1: "mono", 2: "stereo"}


class Resampler:
    """Converts one segment's interleaved PCM16 from `src` to `dst`. Call `flush()` at the segment's end."""

    def __init__(self, src: PcmFormat, dst: PcmFormat) -> None:
        self._src = src
        self._dst = dst
        self._identity = src == dst
        self._pts = 0
        self._resampler: av.AudioResampler | None = None
        self._frames: dict[int, av.AudioFrame] = {}
        if not self._identity:
            self._resampler = av.AudioResampler(format="s16", layout=_LAYOUTS[dst.channels], rate=dst.sample_rate)

    def push(self, pcm: bytes) -> np.ndarray:
        """Convert a chunk (whole sample frames). Returns int16 interleaved samples in `dst`."""
        if self._resampler is None:
            return np.frombuffer(pcm, dtype="<i2")
        n = len(pcm) // (2 * self._src.channels)
        frame = self._frames.get(n)
        if frame is None:
            frame = av.AudioFrame(format="s16", layout=_LAYOUTS[self._src.channels], samples=n)
            frame.sample_rate = self._src.sample_rate
            if len(self._frames) < 4:  # chunks usually come in one or two sizes: reuse their frames
                self._frames[n] = frame
        frame.planes[0].update(pcm)
        frame.pts = self._pts
        self._pts += n
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler's filter."""
        if self._resampler is None:
            return np.empty(0, dtype=np.int16)
        out = self._collect(self._resampler.resample(None))
        self._resampler = None
        return out

    def _collect(self, frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.empty(0, dtype=np.int16)
        channels = self._dst.channels
        parts = [
            np.frombuffer(memoryview(f.planes[0]), dtype=np.int16, count=f.samples * channels).copy() for f in frames
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
