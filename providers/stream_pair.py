"""Pairs a vendor's returned audio and video streams into the gateway's avatar frames.

A stream-pair vendor (Simli) sends back its own audio and video. The framer keeps what arrived in bounded buffers
(the vendor's streams are drained as fast as they come, so memory stays flat whatever the room does) and cuts the
audio, on its own sample clock, into frames of exactly `rate / fps` samples; each frame takes the newest video
frame that had arrived when the frame's first sample arrived, so lips and voice leave paired as the vendor sent
them. The speech cursor labels each frame with the segment its voice belongs to. After an interrupt the vendor's
voice still in flight is played as silence until the vendor goes quiet (at most `mute_s`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
from livekit import rtc

from providers.base import AvatarFrame, PcmFormat, ProviderError, VideoSpec
from providers.speech_cursor import SpeechCursor, is_voiced

I420 = rtc.VideoBufferType.I420


class StreamPairFramer:
    """Frames from one vendor's audio + video streams, for one session."""

    def __init__(self, output: PcmFormat, video: VideoSpec, cursor: SpeechCursor, *, buffer_s: float = 1.0,
                 prebuffer_s: float = 0.06, stall_s: float = 5.0, mute_s: float = 0.5) -> None:
        if output.channels != 1:
            raise ValueError("the framer produces mono audio")
        self._fmt = output
        self._video = video
        self.cursor = cursor
        self._max_samples = int(buffer_s * output.sample_rate)
        self._prebuffer = int(prebuffer_s * output.sample_rate)
        self._stall_s = stall_s
        self._mute_s = mute_s
        self._audio: deque[tuple[np.ndarray, float]] = deque()  # (mono int16, arrival time of its first sample)
        self._buffered = 0
        self._videos: deque[tuple[float, Any]] = deque(maxlen=8)  # (arrival, av.VideoFrame), newest last
        self._converted: tuple[Any, rtc.VideoFrame] | None = None
        self._blank = rtc.VideoFrame(video.width, video.height, I420, _blank_i420(video.width, video.height))
        self._arrived = asyncio.Event()
        self._error: ProviderError | None = None
        self._primed = False
        self._muted_until = 0.0
        self.dropped_samples = 0  # audio dropped because the buffer was full (the room was slower than real time)
        self.frames_out = 0

    # -- input (the vendor's drain tasks) -----------------------------------------------------------------------
    def add_audio(self, pcm: np.ndarray) -> None:
        """Mono int16 audio at the output rate, as it arrived."""
        if not pcm.size:
            return
        self._audio.append((pcm, time.monotonic()))
        self._buffered += pcm.size
        while self._buffered > self._max_samples:
            old, _ = self._audio.popleft()
            self._buffered -= old.size
            self.dropped_samples += old.size
        self._arrived.set()

    def add_video(self, frame: Any) -> None:
        """A decoded av.VideoFrame, as it arrived."""
        self._videos.append((time.monotonic(), frame))

    def fail(self, error: ProviderError) -> None:
        """The vendor's session ended: `frames` raises `error`."""
        if self._error is None:
            self._error = error
        self._arrived.set()

    def clear(self) -> None:
        """An interrupt: forget queued speech, mute what the vendor still has in flight."""
        self.cursor.clear()
        self._audio.clear()
        self._buffered = 0
        self._primed = False
        self._muted_until = time.monotonic() + self._mute_s

    # -- output -------------------------------------------------------------------------------------------------
    async def frames(self) -> AsyncIterator[AvatarFrame]:
        """Frames, forever; raises the vendor's error when its session ends, or PROVIDER_STALLED."""
        rate, fps = self._fmt.sample_rate, self._video.fps
        index = 0
        while True:
            n = (index + 1) * rate // fps - index * rate // fps
            await self._wait_for(n)
            audio, arrived = self._pop(n)
            voiced = is_voiced(audio)
            if self._muted_until:
                if not voiced or time.monotonic() >= self._muted_until:
                    self._muted_until = 0.0
                else:
                    audio, voiced = np.zeros_like(audio), False
            label = self.cursor.take(n, voiced)
            index += 1
            self.frames_out += 1
            yield AvatarFrame(self._video_at(arrived), audio, label.segment_id, label.samples, label.done,
                              label.underrun, segment_cut=label.cut)

    async def _wait_for(self, n: int) -> None:
        need = max(n, self._prebuffer) if not self._primed else n
        while self._buffered < need:
            if self._error is not None:
                raise self._error
            self._arrived.clear()
            try:
                async with asyncio.timeout(self._stall_s):
                    await self._arrived.wait()
            except TimeoutError:
                raise ProviderError.unavailable(f"the provider sent no audio for {self._stall_s:g}s",
                                                "PROVIDER_STALLED") from None
        if self._error is not None:
            raise self._error
        self._primed = True

    def _pop(self, n: int) -> tuple[np.ndarray, float]:
        parts: list[np.ndarray] = []
        got = 0
        arrived = self._audio[0][1]
        while got < n:
            pcm, when = self._audio[0]
            want = n - got
            if pcm.size <= want:
                self._audio.popleft()
                parts.append(pcm)
                got += pcm.size
            else:
                parts.append(pcm[:want])
                self._audio[0] = (pcm[want:], when)
                got = n
        self._buffered -= n
        if not self._buffered:
            self._primed = False  # ran dry: cushion again before the next frame
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), arrived

    def _video_at(self, arrived: float) -> rtc.VideoFrame:
        chosen = None
        for when, frame in self._videos:
            if when > arrived and chosen is not None:
                break
            chosen = frame
        if chosen is None:
            return self._blank
        if self._converted is not None and self._converted[0] is chosen:
            return self._converted[1]
        w, h = self._video.width, self._video.height
        i420 = chosen.reformat(width=w, height=h, format="yuv420p").to_ndarray()
        converted = rtc.VideoFrame(w, h, I420, i420.tobytes())
        self._converted = (chosen, converted)
        return converted


def _blank_i420(width: int, height: int) -> bytes:
    """A mid-grey frame, shown until the vendor's first video frame arrives."""
    return bytes([128]) * (width * height * 3 // 2)


def to_mono(resampler: av.AudioResampler, frame: Any) -> np.ndarray:
    """A decoded av.AudioFrame as mono int16 at the resampler's rate."""
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.int16, copy=False)
