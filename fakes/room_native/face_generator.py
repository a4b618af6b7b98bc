"""The mock's face as a livekit-agents `VideoGenerator`, the render step of a stock avatar worker (the fake
room-native vendors' and the stock path of bench.three_paths)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from providers.mock.face import BlinkSchedule, FaceRenderer


class MockFaceGenerator(VideoGenerator):
    """The mock's face as a livekit-agents VideoGenerator: one frame per 1/fps of audio, the mouth from exactly
    that audio, idle frames between segments, AudioSegmentEnd after each segment."""

    def __init__(self, rate: int, width: int, height: int, fps: int, *, forget_ends: bool = False,
                 idle_audio: bool = True) -> None:
        self._rate = rate
        self._size = (width, height)
        self._fps = fps
        self._per_frame = rate // fps
        self._face = FaceRenderer(width, height)
        self._forget_ends = forget_ends  # never yield AudioSegmentEnd: a vendor that never finishes a segment
        # idle frames carry silence (False: video alone, so AvatarRunner's playback-started marks a segment's first
        # audio; with idle audio it fires once, for the first idle frame)
        self._idle_audio = idle_audio
        self._blink = BlinkSchedule()
        self._pending = np.zeros(0, dtype=np.int16)
        self._ended = False
        self._index = 0
        self._changed = asyncio.Event()

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self._ended = True
        else:
            self._pending = np.concatenate([self._pending, np.frombuffer(frame.data, dtype=np.int16)])
        self._changed.set()

    def clear_buffer(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
        self._ended = False

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        n = self._per_frame
        while True:
            speaking = self._pending.size > 0
            if speaking:
                audio = self._pending[:n]
                self._pending = self._pending[n:]
                if audio.size < n:
                    audio = np.concatenate([audio, np.zeros(n - audio.size, dtype=np.int16)])
            else:
                audio = np.zeros(n, dtype=np.int16)
            level = self._face.level_for(audio)
            data = self._face.frame(level, self._blink.eyes_closed(self._index, self._fps))
            self._index += 1
            yield rtc.VideoFrame(*self._size, rtc.VideoBufferType.I420, data)
            if speaking or self._idle_audio:
                yield rtc.AudioFrame(audio.tobytes(), self._rate, 1, n)
            if self._ended and self._pending.size == 0:
                self._ended = False
                if not self._forget_ends:
                    yield AudioSegmentEnd()
