"""``LoopbackServer``: the development server as an async context manager, with state inspection."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

from aiohttp import web
from livekit import api
from livekit.protocol import models

from .participant import PublishedTrack
from .room import RoomManager
from .room_service import RoomService
from .rtc_session import PeerConnectionRegistry, Subscription
from .signalling import SignallingService
from .tasks import TaskSet

logger = logging.getLogger("loopback")


@dataclass(frozen=True)
class TrackState:
    sid: str
    kind: str  # "audio" | "video"
    source: str  # "CAMERA", "MICROPHONE", ...
    name: str
    muted: bool
    mid: str
    subscribers: int
    frames_received: int  # video: frames completed (RTP marker bits); audio: packets (one Opus frame each)
    stream: str = ""  # TrackInfo.stream ("camera", "screen", or the publisher's own)
    mime_type: str = ""
    ssrc: int | None = None  # the publisher's media SSRC
    packets_received: int = 0
    keyframes_received: int = 0
    keyframe_requests: int = 0  # PLI/FIR from subscribers
    keyframe_requests_sent: int = 0  # PLIs sent to the publisher (requests made together are sent once)
    sender_reports_received: int = 0


@dataclass(frozen=True)
class DowntrackState:
    """What a subscriber gets of one track."""

    track_sid: str
    mid: str | None  # the subscriber's section it is sent on
    stream_id: str  # the msid stream id of its section
    ssrc: int | None  # the SSRC it is sent on
    started: bool  # packets flow (it started at a frame boundary)
    first_frame_keyframe: bool | None  # video: whether the first frame it got was a keyframe
    packets_sent: int
    keyframe_requests: int  # PLI/FIR this subscriber sent for it
    retransmissions: int  # NACKed packets resent from the cache
    sender_reports_sent: int


@dataclass(frozen=True)
class ParticipantState:
    sid: str
    identity: str
    name: str
    kind: str  # "STANDARD", "AGENT", ...
    state: str  # "JOINED", "ACTIVE", ...
    metadata: str
    attributes: dict[str, str]
    tracks: dict[str, TrackState]  # by track sid
    subscriptions: tuple[str, ...]  # track sids this participant receives
    single_pc: bool
    peer_connections: int
    downtracks: dict[str, DowntrackState] = field(default_factory=dict)  # by track sid


@dataclass(frozen=True)
class RoomState:
    sid: str
    name: str
    participants: dict[str, ParticipantState]  # by identity


@dataclass(frozen=True)
class ServerState:
    rooms: dict[str, RoomState]
    peer_connections: int  # RTCPeerConnections not yet closed
    tasks: tuple[str, ...]  # names of the server's background tasks still running
    websockets: int  # signalling connections still open
    extra: dict[str, int] = field(default_factory=dict)  # counters: data_packets_forwarded/_dropped

    def participant(self, room: str, identity: str) -> ParticipantState | None:
        r = self.rooms.get(room)
        return r.participants.get(identity) if r else None

    @property
    def idle(self) -> bool:
        """No room, no peer connection, no background task, no open WebSocket."""
        return not self.rooms and not self.peer_connections and not self.tasks and not self.websockets


class LoopbackServer:
    """A LiveKit-compatible DEVELOPMENT server (signalling, an RTP-forwarding SFU, RoomService) in one process.

    For tests and local development only: users run the real livekit-server or LiveKit Cloud.
    ``port=0`` picks a free port; ``rtc_v1=False`` answers ``/rtc/v1`` with 404 so clients fall back
    to the two-peer-connection ``/rtc`` path; ``sync_streams=False`` gives every subscribed track a media stream
    of its own (livekit-server's default) instead of grouping a participant's camera and microphone into one
    (its ``room.sync_streams``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7880,
        api_key: str = "devkey",
        api_secret: str = "secret",
        *,
        rtc_v1: bool = True,
        sync_streams: bool = True,
        ping_interval: int = 5,
        ping_timeout: int = 15,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret are required")
        self.host = host
        self._port = port
        self.api_key = api_key
        self.api_secret = api_secret
        self.rtc_v1 = rtc_v1
        self._keys = {api_key: api_secret}
        self._tasks = TaskSet("server")
        self._registry = PeerConnectionRegistry()
        self._change = asyncio.Event()
        self.manager = RoomManager(
            registry=self._registry,
            tasks=self._tasks,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            on_change=self._notify,
            sync_streams=sync_streams,
        )
        self._signalling = SignallingService(
            manager=self.manager, tasks=self._tasks, keys=self._keys, rtc_v1=lambda: self.rtc_v1
        )
        self._runner: web.AppRunner | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> LoopbackServer:
        if self._runner is not None:
            return self
        app = web.Application()
        self._signalling.add_routes(app)
        RoomService(self.manager, self._keys).add_routes(app)
        app.router.add_get("/", self._health)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        await site.start()
        self._runner = runner
        server = site._server
        sockets: list[socket.socket] = list(getattr(server, "sockets", None) or [])
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
        logger.info("loopback development server listening on %s", self.url)
        return self

    async def close(self) -> None:
        """Disconnect everyone (LeaveRequest SERVER_SHUTDOWN), close every peer connection and task."""
        if self._closed:
            return
        self._closed = True
        await self.manager.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._registry.close_all()
        await self._tasks.close()
        self._notify()

    async def __aenter__(self) -> LoopbackServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    # ------------------------------------------------------------------ addresses and tokens
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The URL to give ``rtc.Room.connect`` (and ``livekit.api.LiveKitAPI``)."""
        return f"ws://{self.host}:{self._port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def create_token(
        self,
        identity: str,
        room: str,
        *,
        name: str | None = None,
        kind: str | None = None,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
        grants: api.VideoGrants | None = None,
        ttl: datetime.timedelta = datetime.timedelta(hours=1),
    ) -> str:
        """A join token signed with this server's key; ``grants`` defaults to plain room_join."""
        video = grants or api.VideoGrants(room_join=True, room=room)
        token = api.AccessToken(self.api_key, self.api_secret).with_identity(identity).with_grants(video)
        token = token.with_ttl(ttl)
        if name:
            token = token.with_name(name)
        if kind:
            token = token.with_kind(cast(Any, kind))
        if metadata:
            token = token.with_metadata(metadata)
        if attributes:
            token = token.with_attributes(attributes)
        return token.to_jwt()

    # ------------------------------------------------------------------ state
    def _notify(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def state(self) -> ServerState:
        rooms: dict[str, RoomState] = {}
        for room in self.manager.rooms.values():
            participants: dict[str, ParticipantState] = {}
            for p in room.participants.values():
                tracks = {t.sid: _track_state(t) for t in p.tracks.values()}
                subs = p.rtc.subscriptions if p.rtc else {}
                participants[p.identity] = ParticipantState(
                    sid=p.sid,
                    identity=p.identity,
                    name=p.name,
                    kind=models.ParticipantInfo.Kind.Name(p.kind),
                    state=models.ParticipantInfo.State.Name(p.state),
                    metadata=p.metadata,
                    attributes=dict(p.attributes),
                    tracks=tracks,
                    subscriptions=tuple(p.rtc.subscribed_track_sids) if p.rtc else (),
                    single_pc=p.single_pc,
                    peer_connections=p.rtc.peer_connection_count if p.rtc else 0,
                    downtracks={sid: _downtrack_state(sub) for sid, sub in subs.items()},
                )
            rooms[room.name] = RoomState(sid=room.sid, name=room.name, participants=participants)
        return ServerState(
            rooms=rooms,
            peer_connections=len(self._registry),
            tasks=tuple(self._tasks.names),
            websockets=self._signalling.open_sockets,
            extra={
                "data_packets_forwarded": self.manager.data_packets_forwarded,
                "data_packets_dropped": self.manager.data_packets_dropped,
            },
        )

    async def wait_for(
        self,
        predicate: Callable[[ServerState], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for the whole wait, like asyncio.wait_for
    ) -> ServerState:
        """Wait until ``predicate(state())`` holds (re-checked on every room/participant/track change)."""
        async with asyncio.timeout(timeout):
            while True:
                state = self.state()
                if predicate(state):
                    return state
                change = self._change
                # Some state (frame counters, PC closes) changes without a notification: re-check often.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(change.wait(), timeout=0.25)


def _track_state(t: PublishedTrack) -> TrackState:
    f = t.forwarder
    return TrackState(
        sid=t.sid,
        kind=t.kind,
        source=models.TrackSource.Name(t.info.source),
        name=t.info.name,
        muted=t.info.muted,
        mid=t.info.mid,
        subscribers=f.subscriber_count if f else 0,
        frames_received=f.frames_received if f else 0,
        stream=t.info.stream,
        mime_type=t.info.mime_type,
        ssrc=f.ssrc if f else None,
        packets_received=f.packets_received if f else 0,
        keyframes_received=f.keyframes_received if f else 0,
        keyframe_requests=f.keyframe_requests if f else 0,
        keyframe_requests_sent=f.keyframe_requests_sent if f else 0,
        sender_reports_received=f.sender_reports_received if f else 0,
    )


def _downtrack_state(sub: Subscription) -> DowntrackState:
    d = sub.downtrack
    return DowntrackState(
        track_sid=sub.track_sid,
        mid=sub.mid or (sub.transceiver.mid if sub.transceiver is not None else None),
        stream_id=sub.stream_id,
        ssrc=d.ssrc,
        started=d.started,
        first_frame_keyframe=d.first_frame_keyframe,
        packets_sent=d.packets_sent,
        keyframe_requests=d.keyframe_requests,
        retransmissions=d.retransmissions,
        sender_reports_sent=d.sender_reports_sent,
    )
