"""The agent's voice alone, published by the gateway's relay participant once a vendor's avatar is gone.

A stock avatar plugin goes silent when its vendor dies mid-session (the agent keeps speaking into a sink no one
plays). Here the session goes on: the relay publishes an `avatar_audio` microphone track and plays the agent's
speech on it in real time, with the same playout accounting as the gateway's own avatars (a `RoomPublisher` and
its tracker), so every later segment is heard and finished from what actually played. The pacing comes from the
mock's frame queue at 50 frames a second (20 ms of audio each); its tiny frames go to a video source that is never
published.
"""

from __future__ import annotations

import contextlib

import numpy as np
from livekit import rtc

from providers.base import PcmFormat, VideoSpec
from providers.media import SyncedMedia
from providers.mock.provider import MockSession
from providers.playout import PlayoutStats, PlayoutTracker
from providers.room_publisher import AUDIO_TRACK_NAME, RoomPublisher
from providers.segments import SegmentBook

PACING = VideoSpec(width=32, height=32, fps=50)  # never published: only the frame cadence matters
LEAD_MS = 100


class VoiceFallback:
    """Plays one session's speech as a voice track of `room`'s local participant."""

    def __init__(self, room: rtc.Room, book: SegmentBook, sample_rate: int) -> None:
        fmt = PcmFormat(sample_rate, 1)
        self._room = room
        self._book = book
        self._source = MockSession(PACING, sample_rate=sample_rate)
        self._tracker = PlayoutTracker(book, sample_rate)
        self._media = SyncedMedia(fmt, PACING, queue_ms=LEAD_MS + 100)
        self._publisher = RoomPublisher(audio=fmt, video=PACING, tracker=self._tracker, connection=None,
                                        lead_ms=LEAD_MS, media=self._media)
        self._publication: rtc.LocalTrackPublication | None = None

    @property
    def stats(self) -> PlayoutStats:
        return self._tracker.stats

    async def start(self) -> None:
        """Publish the voice track."""
        track = rtc.LocalAudioTrack.create_audio_track(AUDIO_TRACK_NAME, self._media.audio_source)
        self._publication = await self._room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

    async def run(self) -> None:
        """Play until cancelled."""
        await self._publisher.run(self._source.frames())

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        await self._source.push_audio(segment_id, pcm)
        self._publisher.audio_arrived()

    async def end_segment(self, segment_id: int) -> None:
        await self._source.end_segment(segment_id)

    async def interrupt(self) -> None:
        await self._source.clear()
        await self._publisher.interrupt(self._book.finish_open)

    async def aclose(self) -> None:
        await self._source.aclose()
        publication, self._publication = self._publication, None
        if publication is not None and self._room.isconnected():
            with contextlib.suppress(Exception):  # the room is going away: the track goes with it
                await self._room.local_participant.unpublish_track(publication.sid)
        await self._publisher.aclose()
