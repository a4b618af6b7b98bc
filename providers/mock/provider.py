"""The mock provider: a procedural face whose mouth follows exactly the audio each frame carries.

Deterministic and cheap (precomputed images, O(1) numpy per frame), it exercises the whole gateway path without any
external service, and its frames make A/V sync measurable from pixels.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Mapping

import numpy as np
from livekit import rtc

from providers.base import (
    AvatarFrame,
    OptionError,
    PcmFormat,
    ProviderAdapter,
    ProviderInfo,
    ProviderSession,
    SessionSpec,
    VideoSpec,
)
from providers.mock.face import BlinkSchedule, FaceRenderer

MOCK_INFO = ProviderInfo(
    name="mock",
    display_name="Mock avatar (procedural face, no external service)",
    audio_format=PcmFormat(sample_rate=24000, channels=1),
    default_video=VideoSpec(width=640, height=480, fps=30),
    max_session_seconds=24 * 3600.0,
)

_OPTIONS = {
    "seed": "blink schedule seed (integer)",
    "prebuffer_ms": "audio buffered before a segment starts (0-500; default: one frame plus the segment's largest"
                    " chunk, the least that keeps a real-time stream from running dry)",
    # real providers differ (Simli 16 kHz, Tavus 24 kHz): the mock can stand in for any of them
    "sample_rate": "audio rate in and out, Hz (8000-48000; default 24000)",
}
I420 = rtc.VideoBufferType.I420  # a protobuf enum: looking it up costs microseconds, per frame
_RANGES = {"prebuffer_ms": (0, 500), "sample_rate": (8000, 48000)}


@functools.lru_cache(maxsize=8)
def _renderer(width: int, height: int) -> FaceRenderer:
    """Renderers are immutable after construction: sessions of one size share one."""
    return FaceRenderer(width, height)


class MockProvider(ProviderAdapter):
    """Adapter for the mock avatar."""

    @property
    def info(self) -> ProviderInfo:
        return MOCK_INFO

    def validate_options(self, avatar_id: str, options: Mapping[str, str]) -> None:
        for key, value in options.items():
            if key not in _OPTIONS:
                raise OptionError(key, f"unknown option {key!r}; the mock provider knows {sorted(_OPTIONS)}")
            try:
                number = int(value)
            except ValueError:
                raise OptionError(key, f"option {key!r} must be an integer") from None
            low, high = _RANGES.get(key, (number, number))
            if not low <= number <= high:
                raise OptionError(key, f"option {key!r} must be between {low} and {high}")

    async def warm_up(self) -> None:
        d = MOCK_INFO.default_video
        await asyncio.to_thread(_renderer, d.width, d.height)

    async def start(self, spec: SessionSpec) -> ProviderSession:
        # building a new size's images takes tens of milliseconds: never on the event loop
        face = await asyncio.to_thread(_renderer, spec.video.width, spec.video.height)
        return MockSession(
            spec.video,
            face=face,
            seed=int(spec.options.get("seed", "0")),
            prebuffer_ms=int(spec.options["prebuffer_ms"]) if "prebuffer_ms" in spec.options else None,
            sample_rate=int(spec.options.get("sample_rate", str(MOCK_INFO.audio_format.sample_rate))),
        )


class MockSession(ProviderSession):
    """One mock avatar. Input audio is queued per segment; each frame takes exactly its share of samples."""

    def __init__(self, video: VideoSpec, *, face: FaceRenderer | None = None, seed: int = 0,
                 prebuffer_ms: int | None = None, sample_rate: int = MOCK_INFO.audio_format.sample_rate) -> None:
        self._video = video
        self._fmt = PcmFormat(sample_rate, MOCK_INFO.audio_format.channels)
        self._face = face or _renderer(video.width, video.height)
        self._blink = BlinkSchedule(seed)
        # None: derived per segment (`_ready`)
        self._prebuffer = None if prebuffer_ms is None else self._fmt.sample_rate * prebuffer_ms // 1000
        # (segment id, samples) entries; samples None marks the segment's end
        self._queue: deque[tuple[int, np.ndarray | None]] = deque()
        self._queued: dict[int, int] = {}  # samples per channel queued per segment
        self._largest: dict[int, int] = {}  # the largest chunk queued per segment, samples per channel
        self._ended: set[int] = set()
        self._playing: int = 0  # segment whose playout began
        self._closed = False
        self._silence_cache: dict[int, np.ndarray] = {}

    @property
    def output_format(self) -> PcmFormat:
        return self._fmt

    @property
    def video(self) -> VideoSpec:
        return self._video

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        if pcm.size == 0:
            return
        samples = pcm.size // self._fmt.channels
        self._queue.append((segment_id, pcm))
        self._queued[segment_id] = self._queued.get(segment_id, 0) + samples
        self._largest[segment_id] = max(self._largest.get(segment_id, 0), samples)

    async def end_segment(self, segment_id: int) -> None:
        self._queue.append((segment_id, None))
        self._ended.add(segment_id)

    async def clear(self) -> None:
        self._queue.clear()
        self._queued.clear()
        self._largest.clear()
        self._ended.clear()
        self._playing = 0

    async def aclose(self) -> None:
        self._closed = True
        await self.clear()

    def _silence(self, n: int) -> np.ndarray:
        buf = self._silence_cache.get(n)
        if buf is None:
            buf = self._silence_cache[n] = np.zeros(n * self._fmt.channels, dtype=np.int16)
            buf.flags.writeable = False
        return buf

    def _ready(self, seg: int, n: int) -> bool:
        """Whether segment `seg` may start playing in a frame of `n` samples. Once it starts, a frame is taken
        every frame time while the agent's audio comes a chunk at a time: with one frame plus one chunk queued at
        the start, a real-time stream never runs dry, and a faster-than-real-time one starts at once."""
        if seg in self._ended:
            return True
        need = self._prebuffer if self._prebuffer is not None else n + self._largest.get(seg, 0)
        return self._queued.get(seg, 0) >= need

    def _take(self, n: int) -> tuple[np.ndarray, int, int, bool, bool]:
        """The audio of the next frame: (samples, segment, segment samples, done, underrun)."""
        queue = self._queue
        if not queue:
            return self._silence(n), 0, 0, False, False
        seg = queue[0][0]
        if self._playing != seg:
            if not self._ready(seg, n):
                return self._silence(n), 0, 0, False, False
            self._playing = seg
        ch = self._fmt.channels
        parts: list[np.ndarray] = []
        got = 0
        done = False
        while queue and queue[0][0] == seg and got < n:
            _, pcm = queue[0]
            if pcm is None:
                queue.popleft()
                done = True
                break
            want = (n - got) * ch
            if pcm.size <= want:
                queue.popleft()
                parts.append(pcm)
                got += pcm.size // ch
            else:
                parts.append(pcm[:want])
                queue[0] = (seg, pcm[want:])
                got = n
        if not done and queue and queue[0][0] == seg and queue[0][1] is None:
            queue.popleft()
            done = True
        self._queued[seg] = self._queued.get(seg, 0) - got
        if done:
            self._queued.pop(seg, None)
            self._largest.pop(seg, None)
            self._ended.discard(seg)
            self._playing = 0
        underrun = got < n and not done
        if got < n:
            parts.append(self._silence(n - got))
        audio = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return audio, seg, got, done, underrun

    async def frames(self) -> AsyncIterator[AvatarFrame]:
        rate, fps = self._fmt.sample_rate, self._video.fps
        w, h = self._video.width, self._video.height
        face, blink, channels = self._face, self._blink, self._fmt.channels
        index = 0
        while not self._closed:
            # frame k carries samples [floor(k*rate/fps), floor((k+1)*rate/fps)): no drift, ever
            n = (index + 1) * rate // fps - index * rate // fps
            audio, seg, seg_samples, done, underrun = self._take(n)
            voiced = audio[: seg_samples * channels]
            mono = voiced if channels == 1 else voiced.reshape(-1, channels).mean(axis=1).astype(np.int16)
            level = face.level_for(mono)
            video = rtc.VideoFrame(w, h, I420, face.frame(level, blink.eyes_closed(index, fps)))
            index += 1
            yield AvatarFrame(video, audio, seg, seg_samples, done, underrun)
