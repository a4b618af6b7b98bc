"""The one place that publishes an avatar's frames into its LiveKit room.

Publishes `avatar_audio` (microphone) and `avatar_video` (camera) from LiveKit media sources on the session's
room connection, paces the provider's frames in real time and tells the playout tracker how far playout has got.
Better than livekit-agents' AvatarRunner in three ways:

- pacing is ours: a frame is pulled from the provider only when less than the lead of audio is queued, so the
  audio source never blocks and an interrupt can never race with a capture in flight. The lead is measured, not
  guessed (`providers.lead`): what this publisher's own late wake-ups need, at most `lead_ms`;
- a segment's first word does not wait behind idle silence: idle silence is counted but not sent (receivers meet
  each utterance fresh, as they do an agent publishing its own voice); when a segment's first frame comes, only
  the lead's worth of silence is sent ahead of it, and agent audio arriving while idle wakes the publisher at once
  instead of at its next frame;
- playback positions are what left the audio queue (pushed - queued), not what was pushed;
- an interrupt clears the delay line of video frames and the audio source's queue, and any frame the provider had
  already produced for an interrupted segment plays as silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import numpy as np
from livekit import rtc

from providers.base import AvatarFrame, PcmFormat, ProviderError, VideoSpec
from providers.lead import AdaptiveLead
from providers.media import MediaOutput, PlayoutClock, SyncedMedia
from providers.playout import PlayoutTracker
from providers.room_connection import RoomConnection
from providers.wakeups import Wakeups

AUDIO_TRACK_NAME = "avatar_audio"
LEAD_FLOOR_S = 0.01  # the audio source plays 10 ms frames: the next one must be queued when its tick comes
VIDEO_TRACK_NAME = "avatar_video"


class RoomPublisher:
    """Publishes one avatar session's frames. `connection` None runs headless: paced and accounted, published
    nowhere (on a playout clock when `clock_only`, else through real but unpublished LiveKit sources). `media`, if
    given, is the output played into instead."""

    def __init__(
        self,
        *,
        audio: PcmFormat,
        video: VideoSpec,
        tracker: PlayoutTracker,
        connection: RoomConnection | None,
        lead_ms: int = 100,
        video_delay_ms: int = 0,
        clock_only: bool = False,
        media: MediaOutput | None = None,
        on_republished: Callable[[str, float], None] | None = None,
    ) -> None:
        self._fmt = audio
        self._video = video
        self._tracker = tracker
        self._connection = connection
        self._lead_cap_s = lead_ms / 1000.0
        self.lead = AdaptiveLead(LEAD_FLOOR_S, self._lead_cap_s, time.monotonic())
        self._video_delay = audio.sample_rate * video_delay_ms // 1000
        self._clock_only = clock_only and connection is None
        self._on_republished = on_republished
        self._lock = asyncio.Lock()
        self._media: MediaOutput | None = media
        # video frames waiting for their audio to start playing: (first output sample, frame, timestamp, arrival of
        # a republished frame's vendor media)
        self._video_line: deque[tuple[int, rtc.VideoFrame, float, float | None]] = deque()
        self._video_ready = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None
        self._idle = True  # the last frame pushed carried no segment's audio
        self._sent_end = 0  # output sample where the last audio sent to the source ends
        self._unsent_end = 0  # output sample where the last idle silence counted but not sent ends
        self.videos_released = 0
        self.first_frame = asyncio.get_running_loop().create_future()

    @property
    def synced_media(self) -> SyncedMedia | None:
        """The LiveKit sources, unless running on a playout clock."""
        return self._media if isinstance(self._media, SyncedMedia) else None

    async def start(self) -> None:
        """Create the media output (unless handed one); join the room and publish both tracks unless headless."""
        if self._media is not None:
            return
        if self._clock_only:
            self._media = PlayoutClock(self._fmt)
            return
        # the source's own queue holds the lead, the frame being pushed and one more: never more than we count as
        # queued, so what we call heard is what was heard (a larger queue lets audio pile up behind our count when
        # the source drains late, and video released on that count leads the voice)
        queue_ms = math.ceil((self._lead_cap_s * 1000 + 2000 / self._video.fps) / 10) * 10 + 10  # a multiple of 10 ms
        self._media = SyncedMedia(self._fmt, self._video, queue_ms=queue_ms)
        if self._connection is not None:
            await self._publish(self._connection, self._media)

    async def _publish(self, connection: RoomConnection, media: SyncedMedia) -> None:
        room = await connection.join()
        try:
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
            raise connection.join_error(exc) from None

    async def run(self, frames: AsyncIterator[AvatarFrame]) -> None:
        """Pull frames and publish them in real time until cancelled or the provider fails.

        Audio goes to the media output at once (its queue paces us); each video frame waits in a delay line and
        is released exactly when its audio starts to play, so both leave the gateway together.
        """
        media, tracker = self._media, self._tracker
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
                    playing = tracker.is_playing(frame.segment_id)
                    if not playing:
                        frame.audio = np.zeros_like(frame.audio)
                    self._idle = not (playing and frame.segment_id)
                    # idle silence is counted, not sent, unless sent audio is still queued ahead of it (the source
                    # plays its queue without gaps: unsent silence there would pull what follows forward)
                    heard = self._heard()
                    send = not self._idle or bool(frame.audio.any()) or heard < self._sent_end
                    if send and heard < self._unsent_end:
                        await self._replace_unsent_silence(media)
                    start = tracker.pushed
                    tracker.frame_pushed(samples, frame.segment_id, frame.segment_samples, frame.segment_done,
                                         frame.segment_cut)
                    if playing and frame.underrun:
                        tracker.underrun(frame.segment_id)
                    if send:
                        self._sent_end = tracker.pushed
                    else:
                        self._unsent_end = tracker.pushed
                    await media.push_audio(frame.audio, tracker.pushed / rate, send=send)
                    if frame.arrived is not None and self._on_republished is not None:
                        self._on_republished("audio", time.monotonic() - frame.arrived)
                    if delayed:
                        self._video_line.append((start, frame.video, index * frame_duration, frame.arrived))
                        self._video_ready.set()
                    else:
                        await media.push_video(frame.video, index * frame_duration)
                        self._frame_shown()
                        if frame.arrived is not None and self._on_republished is not None:
                            self._on_republished("video", time.monotonic() - frame.arrived)
                    tracker.heard_up_to(self._heard())
                    index += 1
                ahead, lead = media.queued_duration, self.lead.lead_s
                if ahead > lead:
                    # an interrupt empties the queue and resolves this wait at once, so the queue is refilled
                    # with idle frames and the next segment starts on a full queue instead of a burst that would
                    # outrun the agent's audio; agent audio arriving while idle resolves it too (`audio_arrived`)
                    delay = min(ahead - lead, frame_duration)
                    due = loop.time() + delay
                    self._wake = wake = wakeups.sleep(delay)
                    await wake
                    now = loop.time()
                    if now >= due:  # a timed wake-up, not one ended early
                        self.lead.observe(now - due, now)
        finally:
            if releaser is not None:
                releaser.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await releaser
        raise ProviderError.unavailable("the provider stopped producing frames", "PROVIDER_STOPPED")

    async def _replace_unsent_silence(self, media: MediaOutput) -> None:
        """Audio is to be sent while idle silence that was counted but not sent is queued (a segment's first frame,
        usually): replace that silence by the lead's worth, sent, so the source really holds the cushion the next
        wake-up needs and the first word waits behind nothing more. Only unsent silence is dropped: sent audio
        ahead of idle silence makes that silence sent too."""
        tracker, rate = self._tracker, self._fmt.sample_rate
        keep = round(self.lead.lead_s * rate)
        await media.clear()
        self._video_line.clear()
        tracker.silence_pushed(keep)
        self._sent_end = tracker.pushed
        await media.push_audio(np.zeros(keep * self._fmt.channels, dtype=np.int16), tracker.pushed / rate)

    def audio_arrived(self) -> None:
        """Agent audio reached the provider. While idle, pull the next frame now rather than at the next frame
        time: it may be a segment's first. Bounded: never more than a frame beyond the lead's cap is queued."""
        media = self._media
        if (self._idle and media is not None
                and media.queued_duration < self._lead_cap_s + 1.0 / self._video.fps):
            _resolve(self._wake)

    async def _release_video(self) -> None:
        media, line, rate = self._media, self._video_line, self._fmt.sample_rate
        assert media is not None
        while True:
            if not line:
                self._video_ready.clear()
                await self._video_ready.wait()
                continue
            start, video, ts, arrived = line[0]
            wait = (start + self._video_delay - self._heard()) / rate
            if wait > 0.001:
                await asyncio.sleep(wait)
                continue
            line.popleft()
            await media.push_video(video, ts)
            if arrived is not None and self._on_republished is not None:
                self._on_republished("video", time.monotonic() - arrived)
            self._frame_shown()

    def _frame_shown(self) -> None:
        self.videos_released += 1
        if not self.first_frame.done():
            self.first_frame.set_result(None)

    def _heard(self) -> int:
        assert self._media is not None
        queued = round(self._media.queued_duration * self._fmt.sample_rate)
        return max(0, self._tracker.pushed - queued)

    async def interrupt(self, finish_open: Callable[[], None]) -> None:
        """Credit what was heard of the queued frames, call `finish_open` (the segment book finishes every open
        segment) and drop everything queued, all before another frame can be pushed."""
        async with self._lock:
            self._tracker.credit_partial(self._heard() if self._media is not None else 0)
            finish_open()
            self._video_line.clear()
            if self._media is not None:
                await self._media.clear()
            _resolve(self._wake)

    async def aclose(self) -> None:
        """Stop publishing, leave the room, release the media. Idempotent."""
        if self._connection is not None:
            await self._connection.leave()
        media, self._media = self._media, None
        if media is not None:
            await media.aclose()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
