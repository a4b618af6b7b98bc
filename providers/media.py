"""Where a publisher's paced frames go: LiveKit media sources, or a playout clock.

`SyncedMedia` is the real thing (rtc.AudioSource + rtc.VideoSource; published when the publisher joins a room,
draining in real time either way). `PlayoutClock` models the same real-time audio queue in
pure Python for headless gateways, where nothing is published and per-session LiveKit sources would only cost CPU.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod

import numpy as np
from livekit import rtc

from providers.base import PcmFormat, VideoSpec


class MediaOutput(ABC):
    """A real-time sink for audio and the video frames that go with it."""

    @property
    @abstractmethod
    def queued_duration(self) -> float:
        """Seconds of audio pushed but not yet played out."""

    @abstractmethod
    async def push_audio(self, audio: np.ndarray, end_ts: float, *, send: bool = True) -> None:
        """Queue int16 interleaved audio; `end_ts` is its end on the stream's clock. `send` False (for idle
        silence): count it as queued and playing, but send nothing."""

    @abstractmethod
    async def push_video(self, video: rtc.VideoFrame, ts: float) -> None:
        """Show a frame now (the caller releases each frame when its audio starts playing)."""

    @abstractmethod
    async def clear(self) -> None:
        """Drop everything queued."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release everything."""


class SyncedMedia(MediaOutput):
    """A LiveKit audio source and video source, fed by a publisher that times every frame itself.

    Each video frame is captured the moment it is pushed: the publisher releases it when its audio starts to play.
    (rtc.AVSynchronizer would re-pace video on its own 1/fps schedule, whose phase against the audio is arbitrary
    and changes after every cleared queue: up to a frame of extra, varying video delay.)

    How much audio is queued is our own count, not `rtc.AudioSource.queued_duration`: the SDK's estimate
    (livekit 1.1.21) subtracts the time since the previous capture without stopping at zero, so after the queue ran
    dry once (a stall, a vendor's late audio) it stays below the truth by the length of the gap, for good. Counted
    from it, "heard" runs ahead of what was heard, and video released on it leads the voice. The source plays its
    queue in real time and silence when it is empty, which is what `_end` models.

    Idle silence is counted but not sent (`send=False`): a track with nothing to say sends nothing, as an agent
    publishing its own voice does. Receivers' jitter buffers then meet each utterance fresh; fed a continuous
    stream of silence they settle ~25 ms deeper before the first word (measured with the direct path of
    bench.three_paths, with and without 2 s of silence sent before the speech).
    """

    def __init__(self, audio: PcmFormat, video: VideoSpec, queue_ms: int) -> None:
        self._fmt = audio
        self._end = 0.0  # monotonic time at which the audio queued so far will have played
        self.audio_source = rtc.AudioSource(audio.sample_rate, audio.channels, queue_size_ms=queue_ms)
        self.video_source = rtc.VideoSource(video.width, video.height)
        self.last_audio_end = 0.0  # the stream time at which the last audio pushed ends
        self.last_video_time = 0.0  # the stream time of the last video frame shown

    @property
    def queued_duration(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def last_audio_time(self) -> float:
        """The stream time played out so far."""
        return self.last_audio_end - self.queued_duration

    async def push_audio(self, audio: np.ndarray, end_ts: float, *, send: bool = True) -> None:
        channels = self._fmt.channels
        samples = audio.shape[0] // channels
        self._end = max(self._end, time.monotonic()) + samples / self._fmt.sample_rate
        if send:
            await self.audio_source.capture_frame(
                rtc.AudioFrame(audio.tobytes(), self._fmt.sample_rate, channels, samples))
        self.last_audio_end = end_ts

    async def push_video(self, video: rtc.VideoFrame, ts: float) -> None:
        self.video_source.capture_frame(video)
        self.last_video_time = ts

    async def wait_for_playout(self) -> None:
        """Until the queued audio has played: what the source holds, then the idle silence counted (not sent) after
        it, which plays on the clock alone."""
        await self.audio_source.wait_for_playout()
        await asyncio.sleep(self.queued_duration)

    async def clear(self) -> None:
        self._end = 0.0
        self.audio_source.clear_queue()

    async def aclose(self) -> None:
        await self.audio_source.aclose()
        await self.video_source.aclose()


class PlayoutClock(MediaOutput):
    """The audio queue's real-time drain, without any media: queued = end of queued audio - now."""

    def __init__(self, audio: PcmFormat) -> None:
        self._samples_per_s = audio.sample_rate * audio.channels
        self._end = 0.0
        self.frames = 0

    @property
    def queued_duration(self) -> float:
        return max(0.0, self._end - time.monotonic())

    async def push_audio(self, audio: np.ndarray, end_ts: float, *, send: bool = True) -> None:
        self._end = max(self._end, time.monotonic()) + audio.size / self._samples_per_s

    async def push_video(self, video: rtc.VideoFrame, ts: float) -> None:
        self.frames += 1

    async def clear(self) -> None:
        self._end = 0.0

    async def aclose(self) -> None:
        self._end = 0.0
