"""The seam between a session and its provider: the pipeline that carries the session's audio to the avatar and
the avatar's media into the room, and reports what was heard to the session's segment book.

A session is handed its pipeline (`ProviderAdapter.pipeline`) and drives it: `start`, then `run` until it fails or
the session ends, `push_audio` / `end_segment` / `interrupt` from the agent's stream, `aclose` on every exit path.
The session's book guarantees exactly one playback-finished per segment whatever the pipeline reports.

Shapes (README, "Providers"):
- framed and stream-pair republish: `PublishedPipeline`, the provider's frames published by the gateway;
- room-native relay and remote avatar.v1: the vendor (or remote provider) publishes itself; their pipelines relay
  the audio and turn the vendor's playback events into the book's calls.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from providers.base import PcmFormat, ProviderAdapter, ProviderSession, SessionSpec
from providers.playout import PlayoutStats, PlayoutTracker
from providers.room_admin import RoomAdmin
from providers.room_connection import RoomConnection
from providers.room_publisher import RoomPublisher
from providers.segments import SegmentBook


@dataclass(frozen=True, slots=True)
class PipelineParts:
    """What a session hands the pipeline it runs."""

    spec: SessionSpec
    book: SegmentBook
    connection: RoomConnection | None  # None: headless, the session joins no room
    lead_ms: int = 100
    video_delay_ms: int = 0
    # a republished frame's audio or video left for the room this many seconds after its vendor media arrived
    on_republished: Callable[[str, float], None] | None = None
    room_admin: RoomAdmin | None = None  # None: headless
    # the agent streams lk.audio_stream to the avatar itself (a room-native vendor under the room transport): the
    # pipeline relays nothing and the vendor's playback events go to the agent
    agent_sends_audio: bool = False
    # something the agent should know (reason, message): a StreamWarning on its stream
    on_notice: Callable[[str, str], None] | None = None


class MediaPipeline(ABC):
    """How one session's media flows. All methods run on the gateway's event loop."""

    @property
    @abstractmethod
    def input_format(self) -> PcmFormat:
        """The format `push_audio` takes (valid after `start`)."""

    @property
    @abstractmethod
    def first_frame(self) -> asyncio.Future[None]:
        """Resolved when the avatar's first video frame went into the room."""

    @property
    @abstractmethod
    def stats(self) -> PlayoutStats:
        """What was played so far."""

    @abstractmethod
    async def start(self) -> None:
        """Start the provider and join the room; raises ProviderError or RoomJoinError."""

    @abstractmethod
    async def run(self) -> None:
        """Play until cancelled; raises ProviderError when the provider fails."""

    @abstractmethod
    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        """Queue int16 interleaved audio in `input_format` for an open segment."""

    @abstractmethod
    async def end_segment(self, segment_id: int) -> None:
        """No more audio will come for the segment."""

    @abstractmethod
    async def interrupt(self) -> None:
        """Drop everything queued now; credit what was heard and finish every open segment in the book."""

    def stream_attached(self, attached: bool) -> None:  # noqa: B027
        """An agent's audio stream was attached or detached."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop the provider, leave the room, release everything. Idempotent."""


class PublishedPipeline(MediaPipeline):
    """Framed and stream-pair providers: the provider session yields frames, the gateway publishes them."""

    def __init__(self, adapter: ProviderAdapter, parts: PipelineParts) -> None:
        self._adapter = adapter
        self._parts = parts
        self._provider: ProviderSession | None = None
        self._publisher: RoomPublisher | None = None
        self._tracker: PlayoutTracker | None = None

    def _started(self) -> tuple[ProviderSession, RoomPublisher, PlayoutTracker]:
        if self._provider is None or self._publisher is None or self._tracker is None:
            raise RuntimeError("the pipeline has not started")
        return self._provider, self._publisher, self._tracker

    @property
    def input_format(self) -> PcmFormat:
        return self._started()[0].input_format

    @property
    def first_frame(self) -> asyncio.Future[None]:
        return self._started()[1].first_frame

    @property
    def stats(self) -> PlayoutStats:
        return PlayoutStats() if self._tracker is None else self._tracker.stats

    async def start(self) -> None:
        parts = self._parts
        self._provider = provider = await self._adapter.start(parts.spec)
        self._tracker = tracker = PlayoutTracker(parts.book, provider.output_format.sample_rate)
        self._publisher = publisher = RoomPublisher(
            audio=provider.output_format,
            video=provider.video,
            tracker=tracker,
            connection=parts.connection,
            lead_ms=parts.lead_ms,
            video_delay_ms=parts.video_delay_ms,
            clock_only=parts.connection is None,
            on_republished=parts.on_republished,
        )
        await publisher.start()

    async def run(self) -> None:
        provider, publisher, _ = self._started()
        await publisher.run(provider.frames())

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        if self._provider is not None:
            await self._provider.push_audio(segment_id, pcm)
            if self._publisher is not None:
                self._publisher.audio_arrived()

    async def end_segment(self, segment_id: int) -> None:
        if self._provider is not None:
            await self._provider.end_segment(segment_id)

    async def interrupt(self) -> None:
        if self._provider is not None:
            await self._provider.clear()
        if self._publisher is not None:
            await self._publisher.interrupt(self._parts.book.finish_open)

    def stream_attached(self, attached: bool) -> None:
        if self._provider is not None:
            self._provider.stream_attached(attached)

    async def aclose(self) -> None:
        provider, self._provider = self._provider, None
        try:
            if provider is not None:
                await provider.aclose()
        finally:
            publisher, self._publisher = self._publisher, None
            if publisher is not None:
                await publisher.aclose()
            elif self._parts.connection is not None:
                await self._parts.connection.leave()
