"""Writes what a viewer received to an MP4 (H.264 + AAC) with PyAV, on a thread so the event loop never blocks."""

from __future__ import annotations

import queue
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 48000


class Mp4Writer:
    """Feed I420 frames and mono PCM16 audio with their arrival times; `close()` finishes the file."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path = path
        self._size = (width, height)
        self._fps = fps
        self._queue: queue.Queue[tuple[float, _Video | np.ndarray] | None] = queue.Queue(maxsize=600)
        self._thread = threading.Thread(target=self._run, name="mp4-writer", daemon=True)
        self.error: BaseException | None = None
        self.video_frames = 0
        self._thread.start()

    def video(self, t: float, i420: bytes, width: int, height: int) -> None:
        """A frame received at time t (seconds, any clock shared with `audio`); resized to the file's size."""
        self._queue.put((t, _Video(i420, width, height)))

    def audio(self, t: float, samples: np.ndarray) -> None:
        """Mono int16 samples at 48 kHz whose first sample arrived at time t."""
        self._queue.put((t, samples))

    def close(self) -> None:
        """Flush the encoders and close the file (blocking; call it through asyncio.to_thread)."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._encode()
        except BaseException as exc:  # reported by close()
            self.error = exc
            while self._queue.get() is not None:
                pass

    def _encode(self) -> None:
        width, height = self._size
        with av.open(str(self.path), "w") as container:
            vs = container.add_stream("libx264", rate=self._fps, options={"preset": "veryfast", "tune": "zerolatency"})
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.codec_context.time_base = Fraction(1, 1000)
            as_ = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            t0: float | None = None
            audio_pts = 0
            last_video_pts = -1
            while (item := self._queue.get()) is not None:
                t, data = item
                if t0 is None:
                    t0 = t
                if isinstance(data, _Video):
                    frame = data.frame(width, height)
                    pts = max(last_video_pts + 1, round((t - t0) * 1000))
                    frame.pts, frame.time_base = pts, Fraction(1, 1000)
                    last_video_pts = pts
                    container.mux(vs.encode(frame))
                    self.video_frames += 1
                else:
                    if audio_pts == 0:
                        audio_pts = max(0, round((t - t0) * AUDIO_RATE))
                    af = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
                    af.sample_rate, af.pts, af.time_base = AUDIO_RATE, audio_pts, Fraction(1, AUDIO_RATE)
                    audio_pts += data.size
                    container.mux(as_.encode(af))
            container.mux(vs.encode(None))
            container.mux(as_.encode(None))


def i420_to_frame(data: bytes, width: int, height: int) -> av.VideoFrame:
    """Tightly packed I420 bytes as a PyAV frame (copying into its possibly padded planes)."""
    frame = av.VideoFrame(width, height, "yuv420p")
    y = width * height
    c = (width // 2) * (height // 2)
    planes = (data[:y], data[y : y + c], data[y + c : y + 2 * c])
    for plane, src, w in zip(frame.planes, planes, (width, width // 2, width // 2), strict=True):
        rows = len(src) // w
        buf = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        buf[:rows, :w] = np.frombuffer(src, dtype=np.uint8).reshape(rows, w)
    return frame


class _Video:
    """A received I420 frame."""

    def __init__(self, data: bytes, width: int, height: int) -> None:
        self.data, self.width, self.height = data, width, height

    def frame(self, width: int, height: int) -> av.VideoFrame:
        """As a PyAV frame of the file's size."""
        frame = i420_to_frame(self.data, self.width, self.height)
        if (self.width, self.height) != (width, height):
            frame = frame.reformat(width=width, height=height)
        return frame
