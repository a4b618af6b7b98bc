"""Pairs a vendor's returned audio and video streams into the gateway's avatar frames.

A stream-pair vendor (Simli) sends back its own audio and video. The framer keeps what arrived in bounded buffers
(the vendor's streams are drained as fast as they come, so memory stays flat whatever the room does) and cuts the
audio, on its own sample clock, into frames of exactly `rate / fps` samples. Each frame takes the video frame the
vendor captured with the frame's first sample, by the vendor's own clock (RTCP sender reports:
providers/sender_clock.py), so lips and voice leave paired as the vendor sent them whatever the receiving jitter
buffers held; until the first sender report, the newest video frame that had arrived when the audio did.

The first frame waits for `prebuffer_s` of audio (so does the first after an interrupt): that cushion then sits in
the publisher's real-time audio queue and absorbs the jitter of the vendor's stream. Audio held here beyond
`max_latency_s` (the backlog a stall leaves) is dropped, walked past by the speech cursor, rather than delaying
every later word. The cursor labels each frame with the segment its voice belongs to. After an interrupt the
vendor's voice still in flight is played as silence until the vendor goes quiet (at most `mute_s`).
"""

from __future__ import annotations

import asyncio
import math
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

    def __init__(self, output: PcmFormat, video: VideoSpec, cursor: SpeechCursor, *, prebuffer_s: float = 0.1,
                 max_latency_s: float = 0.4, stall_s: float = 5.0, mute_s: float = 0.5) -> None:
        if output.channels != 1:
            raise ValueError("the framer produces mono audio")
        self._fmt = output
        self._video = video
        self.cursor = cursor
        # audio held here beyond what the publisher took: after a stall the vendor's backlog arrives in a burst that
        # real-time playout can never catch up on, so what is over this bound is dropped (walked past by the cursor)
        self._max_samples = int(max_latency_s * output.sample_rate)
        self._prebuffer = int(prebuffer_s * output.sample_rate)
        self._stall_s = stall_s
        self._mute_s = mute_s
        # (mono int16, arrival time of its first sample, its capture time on the vendor's clock or None)
        self._audio: deque[tuple[np.ndarray, float, float | None]] = deque()
        self._buffered = 0
        # (arrival, capture time or None, av.VideoFrame), newest last: as far back as the audio held here can reach
        self._videos: deque[tuple[float, float | None, Any]] = deque(
            maxlen=math.ceil((prebuffer_s + max_latency_s + 0.1) * 60))
        self._uncaptured = 0  # of those, how many have no capture time (until the first sender report)
        self._converted: tuple[Any, rtc.VideoFrame] | None = None
        self._blank_bytes = _blank_i420(video.width, video.height)
        self._blank = rtc.VideoFrame(video.width, video.height, I420, self._blank_bytes)
        # where a vendor frame of another aspect is pasted: its bars never change, only the picture is rewritten
        self._canvas = np.frombuffer(bytearray(self._blank_bytes), dtype=np.uint8)
        self._arrived = asyncio.Event()
        self._error: ProviderError | None = None
        self._primed = False
        self._muted_until = 0.0

    # -- input (the vendor's drain tasks) -----------------------------------------------------------------------
    def add_audio(self, pcm: np.ndarray, captured: float | None = None) -> None:
        """Mono int16 audio at the output rate, as it arrived; `captured`: its first sample's capture time."""
        if not pcm.size:
            return
        self._audio.append((pcm, time.monotonic(), captured))
        self._buffered += pcm.size
        while self._buffered - self._audio[0][0].size >= self._max_samples + self._prebuffer:
            old, _, _ = self._audio.popleft()
            self._buffered -= old.size
            self.cursor.skip(old.size, is_voiced(old))
        self._arrived.set()

    def add_video(self, frame: Any, captured: float | None = None) -> None:
        """A decoded av.VideoFrame, as it arrived; `captured`: its capture time."""
        videos = self._videos
        if len(videos) == videos.maxlen and videos[0][1] is None:
            self._uncaptured -= 1  # about to be evicted
        videos.append((time.monotonic(), captured, frame))
        if captured is None:
            self._uncaptured += 1

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
            audio, arrived, captured = self._pop(n)
            voiced = is_voiced(audio)
            if self._muted_until:
                if not voiced or time.monotonic() >= self._muted_until:
                    self._muted_until = 0.0
                else:
                    audio, voiced = np.zeros_like(audio), False
            label = self.cursor.take(n, voiced)
            index += 1
            yield AvatarFrame(self._video_at(arrived, captured), audio, label.segment_id, label.samples, label.done,
                              label.underrun, segment_cut=label.cut, arrived=arrived)

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

    def _pop(self, n: int) -> tuple[np.ndarray, float, float | None]:
        parts: list[np.ndarray] = []
        got = 0
        _, arrived, captured = self._audio[0]
        rate = self._fmt.sample_rate
        while got < n:
            pcm, when, at = self._audio[0]
            want = n - got
            if pcm.size <= want:
                self._audio.popleft()
                parts.append(pcm)
                got += pcm.size
            else:
                parts.append(pcm[:want])
                later = want / rate
                self._audio[0] = (pcm[want:], when + later, None if at is None else at + later)
                got = n
        self._buffered -= n
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), arrived, captured

    def _video_at(self, arrived: float, captured: float | None) -> rtc.VideoFrame:
        """The video frame captured with the audio (by the vendor's clock), else the newest that had arrived with
        it."""
        # by capture time once every frame held has one (the first sender reports came), else by arrival
        by_capture = captured is not None and not self._uncaptured
        reference = captured if by_capture and captured is not None else arrived
        chosen = None
        for when, at, frame in self._videos:
            moment = at if by_capture and at is not None else when
            if chosen is not None and moment > reference:
                break
            chosen = frame
        if chosen is None:
            return self._blank
        if self._converted is not None and self._converted[0] is chosen:
            return self._converted[1]
        converted = rtc.VideoFrame(self._video.width, self._video.height, I420, self._fit(chosen))
        self._converted = (chosen, converted)
        return converted

    def _fit(self, frame: Any) -> bytes:
        """The vendor's frame scaled to fit the session's size, aspect kept, centred on the blank canvas."""
        w, h = self._video.width, self._video.height
        scale = min(w / frame.width, h / frame.height)
        fw, fh = max(2, round(frame.width * scale) // 2 * 2), max(2, round(frame.height * scale) // 2 * 2)
        scaled = frame.reformat(width=fw, height=fh, format="yuv420p").to_ndarray()
        if (fw, fh) == (w, h):
            same_size: bytes = scaled.tobytes()
            return same_size
        canvas = self._canvas
        x0, y0 = (w - fw) // 2 // 2 * 2, (h - fh) // 2 // 2 * 2
        luma = canvas[: w * h].reshape(h, w)
        luma[y0 : y0 + fh, x0 : x0 + fw] = scaled[:fh]
        cw, ch, fcw, fch = w // 2, h // 2, fw // 2, fh // 2
        chroma = scaled[fh:].reshape(2, fch, fcw)
        for plane in range(2):
            start = w * h + plane * cw * ch
            canvas[start : start + cw * ch].reshape(ch, cw)[y0 // 2 : y0 // 2 + fch, x0 // 2 : x0 // 2 + fcw] = (
                chroma[plane])
        return canvas.tobytes()


def _blank_i420(width: int, height: int) -> bytes:
    """A black frame (also the bars around a vendor frame of another aspect), shown until the vendor's first
    video frame arrives."""
    return bytes([16]) * (width * height) + bytes([128]) * (width * height // 2)


def to_mono(resampler: av.AudioResampler, frame: Any) -> np.ndarray:
    """A decoded av.AudioFrame as mono int16 at the resampler's rate."""
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.int16, copy=False)
