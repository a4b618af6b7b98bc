"""The fake Simli session's outgoing WebRTC media: an audio and a video track paced from one :class:`Playout`.

* :class:`PlayoutAudioTrack`: 20 ms frames, s16 stereo 48 kHz (what aiortc's Opus encoder takes as is), carrying
  exactly the queued 16 kHz audio (each sample repeated 3 times, both channels), silence when the queue is empty.
* :class:`FaceVideoTrack`: ``providers.mock.face.FaceRenderer`` frames (I420) at ``fps``; the mouth opening of frame
  ``j`` is the loudness of the audio whose playout starts with it, so the project's viewer tools
  (``providers.mock.face.mouth_opening*``, ``viewer.sync``) read the lips back from the received pixels.

Both tracks sleep until their frame is due on the playout's clock (``pts`` from the frame index), and start at the
frame due when they are first read, so a late start never bursts frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from fractions import Fraction
from typing import Final

import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from providers.mock.face import BlinkSchedule, FaceRenderer

from .playout import Playout
from .protocol import (
    AUDIO_FRAME_MS,
    INPUT_RATE,
    INPUT_SAMPLES_PER_AUDIO_FRAME,
    OUTPUT_CHANNELS,
    OUTPUT_RATE,
    OUTPUT_SAMPLES_PER_AUDIO_FRAME,
    UPSAMPLE,
    VIDEO_CLOCK_RATE,
)

__all__ = ["FaceVideoTrack", "PlayoutAudioTrack", "RendererCache", "close_peer_connection"]

_AUDIO_TIME_BASE: Final = Fraction(1, OUTPUT_RATE)
_VIDEO_TIME_BASE: Final = Fraction(1, VIDEO_CLOCK_RATE)


class _PacedTrack(MediaStreamTrack):
    """A track whose frame ``i`` is due at ``playout.origin() + i / rate``."""

    def __init__(self, playout: Playout, rate: Fraction) -> None:
        super().__init__()
        self._playout = playout
        self._rate = rate
        self._index: int | None = None
        self.frames_sent = 0

    async def _next_index(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        origin = self._playout.origin()
        if self._index is None:
            self._index = self._playout.first_index(float(self._rate))
        index = self._index
        delay = origin + float(index / self._rate) - self._playout.now()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.readyState != "live":
            raise MediaStreamError
        self._index = index + 1
        self.frames_sent += 1
        return index

    def stop(self) -> None:
        super().stop()
        self._playout.release(self.kind)


class PlayoutAudioTrack(_PacedTrack):
    kind = "audio"

    def __init__(self, playout: Playout, on_frame: Callable[[int], None] | None = None) -> None:
        super().__init__(playout, Fraction(1000, AUDIO_FRAME_MS))
        self._on_frame = on_frame

    async def recv(self) -> AudioFrame:
        index = await self._next_index()
        start = index * INPUT_SAMPLES_PER_AUDIO_FRAME
        pcm = self._playout.take(self.kind, start, start + INPUT_SAMPLES_PER_AUDIO_FRAME)
        # Zero-order hold to 48 kHz, both channels: delay-free, so the audio stays on the video's timeline.
        stereo = np.repeat(pcm, UPSAMPLE * OUTPUT_CHANNELS).reshape(1, -1)
        frame = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = OUTPUT_RATE
        frame.pts = index * OUTPUT_SAMPLES_PER_AUDIO_FRAME
        frame.time_base = _AUDIO_TIME_BASE
        if self._on_frame is not None:
            self._on_frame(index)
        return frame


class FaceVideoTrack(_PacedTrack):
    kind = "video"

    def __init__(self, playout: Playout, renderer: FaceRenderer, fps: float, *, blink: BlinkSchedule | None = None,
                 on_frame: Callable[[int, int], None] | None = None) -> None:
        rate = Fraction(fps).limit_denominator(1001)
        if rate <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        super().__init__(playout, rate)
        self._renderer = renderer
        self._blink = blink
        self._on_frame = on_frame

    def samples_of(self, index: int) -> tuple[int, int]:
        """The timeline samples frame ``index`` shows the loudness of."""
        num, den = self._rate.numerator, self._rate.denominator
        return index * INPUT_RATE * den // num, (index + 1) * INPUT_RATE * den // num

    async def recv(self) -> VideoFrame:
        index = await self._next_index()
        start, stop = self.samples_of(index)
        level = self._renderer.level_for(self._playout.take(self.kind, start, stop))
        eyes_closed = self._blink is not None and self._blink.eyes_closed(index, float(self._rate))
        width, height = self._renderer.width, self._renderer.height
        i420 = np.frombuffer(self._renderer.frame(level, eyes_closed), dtype=np.uint8)
        frame = VideoFrame.from_ndarray(i420.reshape(height * 3 // 2, width), format="yuv420p")
        frame.pts = index * VIDEO_CLOCK_RATE * self._rate.denominator // self._rate.numerator
        frame.time_base = _VIDEO_TIME_BASE
        if self._on_frame is not None:
            self._on_frame(index, level)
        return frame


class RendererCache:
    """One :class:`FaceRenderer` per size, built in a worker thread (~0.15 s at 512x512) so the loop never blocks."""

    def __init__(self) -> None:
        self._renderers: dict[tuple[int, int], asyncio.Future[FaceRenderer]] = {}

    async def get(self, width: int, height: int) -> FaceRenderer:
        key = (width, height)
        future = self._renderers.get(key)
        if future is None or (future.done() and (future.cancelled() or future.exception() is not None)):
            future = asyncio.ensure_future(asyncio.to_thread(FaceRenderer, width, height))
            self._renderers[key] = future
        return await asyncio.shield(future)

    async def close(self) -> None:
        pending = [future for future in self._renderers.values() if not future.done()]
        await asyncio.gather(*pending, return_exceptions=True)
        self._renderers.clear()


# aiortc keeps its senders' and receivers' RTP/RTCP tasks in name-mangled attributes and aioice its consent task; a
# part that never started is not stopped by close(), and stop() returns a step before its tasks are done.
_TASK_ATTRIBUTES: Final = ("_RTCRtpSender__rtp_task", "_RTCRtpSender__rtcp_task", "_RTCRtpReceiver__rtcp_task",
                           "_query_consent_task")


def _leftover_tasks(pc: RTCPeerConnection) -> list[asyncio.Future[None]]:
    parts: list[object] = []
    for transceiver in pc.getTransceivers():
        parts += [transceiver.sender, transceiver.receiver]
    for ice in getattr(pc, "_RTCPeerConnection__iceTransports", ()):
        parts.append(getattr(ice, "_connection", None))
    tasks: list[asyncio.Future[None]] = []
    for part in parts:
        for name in _TASK_ATTRIBUTES:
            task = getattr(part, name, None)
            if isinstance(task, asyncio.Future) and not task.done():
                tasks.append(task)
    return tasks


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc`` (its senders send RTCP BYE, which ends the remote tracks) and wait until none of its tasks run."""
    try:
        await pc.close()
    finally:
        tasks = _leftover_tasks(pc)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

