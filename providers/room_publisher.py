"""The one place that owns the LiveKit side of an avatar.

Joins the room as the avatar participant, publishes `avatar_audio` (microphone) and `avatar_video` (camera) through
`rtc.AVSynchronizer`, paces the provider's frames in real time, tells the playback ledger how far playout has got,
and leaves. Better than livekit-agents' AvatarRunner in three ways:

- pacing is ours: a frame is pulled from the provider only when less than `lead_ms` of audio is queued, so the
  audio source never blocks and an interrupt can never race with a capture in flight;
- playback positions are what left the audio queue (pushed - queued), not what was pushed;
- an interrupt clears the synchronizer's video queue and the audio source's queue, and any frame the provider had
  already produced for an interrupted segment plays as silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

import numpy as np
from livekit import rtc

from providers import sdk_logs
from providers.base import AvatarFrame, PcmFormat, ProviderError, RoomSpec, VideoSpec
from providers.media import MediaOutput, PlayoutClock, SyncedMedia
from providers.playback import PlaybackLedger
from providers.wakeups import Wakeups

log = logging.getLogger(__name__)

AUDIO_TRACK_NAME = "avatar_audio"
VIDEO_TRACK_NAME = "avatar_video"


class RoomJoinError(Exception):
    """The avatar could not join or publish. The message never contains the token."""


class RoomPublisher:
    """Publishes one avatar session's frames. `room` None runs headless: paced and accounted, published nowhere."""

    def __init__(
        self,
        *,
        audio: PcmFormat,
        video: VideoSpec,
        ledger: PlaybackLedger,
        room: RoomSpec | None,
        lead_ms: int = 100,
        video_delay_ms: int = 0,
        clock_only: bool = False,
        on_disconnected: Callable[[str], None] | None = None,
    ) -> None:
        self._fmt = audio
        self._video = video
        self._ledger = ledger
        self._room_spec = room
        self._lead_s = lead_ms / 1000.0
        self._video_delay = audio.sample_rate * video_delay_ms // 1000
        self._clock_only = clock_only and room is None
        self._on_disconnected = on_disconnected
        self._lock = asyncio.Lock()
        self._media: MediaOutput | None = None
        # video frames waiting for their audio to start playing: (first output sample, frame, timestamp)
        self._video_line: deque[tuple[int, rtc.VideoFrame, float]] = deque()
        self._video_ready = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None
        self.videos_released = 0
        self._room: rtc.Room | None = None
        self._closing = False
        self.first_frame = asyncio.get_running_loop().create_future()

    @property
    def media(self) -> MediaOutput | None:
        """Where frames go (for measurements)."""
        return self._media

    @property
    def av_sync(self) -> rtc.AVSynchronizer | None:
        """The synchronizer, unless running on a playout clock."""
        return self._media.av_sync if isinstance(self._media, SyncedMedia) else None

    @property
    def room(self) -> rtc.Room | None:
        """The connected room, or None when headless or not yet joined."""
        return self._room

    async def start(self) -> None:
        """Create the media output; join the room and publish both tracks unless headless."""
        if self._clock_only:
            self._media = PlayoutClock(self._fmt)
            return
        self._media = SyncedMedia(self._fmt, self._video, queue_ms=max(200, int(self._lead_s * 4000)))
        if self._room_spec is not None:
            await self._join(self._room_spec, self._media)

    async def _join(self, spec: RoomSpec, media: SyncedMedia) -> None:
        sdk_logs.install()
        room = rtc.Room()
        room.on("disconnected", self._disconnected)
        self._room = room
        try:
            await room.connect(spec.url, spec.token, rtc.RoomOptions(auto_subscribe=False))
            audio_track = rtc.LocalAudioTrack.create_audio_track(AUDIO_TRACK_NAME, media.audio_source)
            video_track = rtc.LocalVideoTrack.create_video_track(VIDEO_TRACK_NAME, media.video_source)
            # both at once: the SDK then renegotiates once for the two (it debounces renegotiation by 150 ms)
            await asyncio.gather(
                room.local_participant.publish_track(
                    audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                ),
                room.local_participant.publish_track(
                    video_track,
                    rtc.TrackPublishOptions(
                        source=rtc.TrackSource.SOURCE_CAMERA,
                        simulcast=False,
                        video_encoding=rtc.VideoEncoding(max_framerate=self._video.fps, max_bitrate=1_500_000),
                    ),
                ),
            )
        except Exception as exc:
            # rtc errors can echo the URL with the token as a query parameter: never pass their text on.
            log.warning("avatar %s could not join room %s: %s", spec.avatar_identity, spec.room_name,
                        type(exc).__name__)
            raise RoomJoinError(f"the avatar could not join room {spec.room_name!r}") from None

    def _disconnected(self, reason: object) -> None:
        if self._closing or self._on_disconnected is None:
            return
        self._on_disconnected(str(reason))

    async def run(self, frames: AsyncIterator[AvatarFrame]) -> None:
        """Pull frames and publish them in real time until cancelled or the provider fails.

        Audio goes to the media output at once (its queue paces us); each video frame waits in a delay line and
        is released exactly when its audio starts to play, so both leave the gateway together.
        """
        media, ledger = self._media, self._ledger
        assert media is not None
        rate, channels = self._fmt.sample_rate, self._fmt.channels
        frame_duration = 1.0 / self._video.fps
        index = 0
        loop = asyncio.get_running_loop()
        wakeups = Wakeups.for_loop(loop)
        # on a playout clock nothing is shown: frames need no delay line (and no second task waking per frame)
        delayed = isinstance(media, SyncedMedia)
        releaser = loop.create_task(self._release_video(), name="video-release") if delayed else None
        try:
            async for frame in frames:
                async with self._lock:
                    samples = frame.audio.shape[0] // channels
                    start = ledger.pushed
                    if not ledger.frame_pushed(samples, frame.segment_id, frame.segment_samples, frame.segment_done):
                        frame.audio = np.zeros_like(frame.audio)
                    elif frame.underrun:
                        ledger.count_underrun(frame.segment_id)
                    await media.push_audio(frame.audio, ledger.pushed / rate)
                    if delayed:
                        self._video_line.append((start, frame.video, index * frame_duration))
                        self._video_ready.set()
                    else:
                        await media.push_video(frame.video, index * frame_duration)
                        self._frame_shown()
                    ledger.heard_up_to(self._heard())
                    index += 1
                ahead = media.queued_duration
                if ahead > self._lead_s:
                    # an interrupt empties the queue and resolves this wait at once, so the queue is refilled
                    # with idle frames and the next segment starts on a full queue instead of a burst that would
                    # outrun the agent's audio
                    self._wake = wake = wakeups.sleep(min(ahead - self._lead_s, frame_duration))
                    await wake
        finally:
            if releaser is not None:
                releaser.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await releaser
        raise ProviderError("the provider stopped producing frames", retryable=True)

    async def _release_video(self) -> None:
        media, line, rate = self._media, self._video_line, self._fmt.sample_rate
        assert media is not None
        while True:
            if not line:
                self._video_ready.clear()
                await self._video_ready.wait()
                continue
            start, video, ts = line[0]
            wait = (start + self._video_delay - self._heard()) / rate
            if wait > 0.001:
                await asyncio.sleep(wait)
                continue
            line.popleft()
            await media.push_video(video, ts)
            self._frame_shown()

    def _frame_shown(self) -> None:
        self.videos_released += 1
        if not self.first_frame.done():
            self.first_frame.set_result(None)

    def _heard(self) -> int:
        assert self._media is not None
        queued = round(self._media.queued_duration * self._fmt.sample_rate)
        return max(0, self._ledger.pushed - queued)

    async def interrupt(self) -> None:
        """Finish every open segment as interrupted at its heard position and drop everything queued."""
        async with self._lock:
            self._ledger.interrupt(self._heard() if self._media is not None else 0)
            self._video_line.clear()
            if self._media is not None:
                await self._media.clear()
            _resolve(self._wake)

    async def aclose(self) -> None:
        """Stop publishing, leave the room, release the media. Idempotent."""
        self._closing = True
        room, self._room = self._room, None
        if room is not None:
            with contextlib.suppress(Exception):
                await room.disconnect()
        media, self._media = self._media, None
        if media is not None:
            await media.aclose()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
