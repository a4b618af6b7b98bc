"""The avatar.v1.AvatarProvider servicer: thin RPC glue over the session manager and the audio stream."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Iterator
from typing import Any

from avatar.v1 import audio_stream_pb2 as stream_pb
from avatar.v1 import avatar_provider_pb2 as pb
from avatar.v1 import avatar_provider_pb2_grpc as pb_grpc

from gateway import errors, paging
from gateway.audio_relay import AudioRelay
from gateway.cluster import Peers
from gateway.config import Caller, GatewayConfig
from gateway.convert import provider_pb, session_pb
from gateway.directory import Elsewhere
from gateway.forwarding import Forwarder, is_forwarded
from gateway.session import TERMINAL, AudioTransport, State
from gateway.session_manager import SessionManager
from gateway.stream_audio_call import GoAwayEvent, StreamAudioCall, validate_format

ANONYMOUS = Caller("anonymous")

Ctx = Any  # grpc.aio.ServicerContext (grpc ships no type information)


class AvatarProviderService(pb_grpc.AvatarProviderServicer):
    """avatar.v1.AvatarProvider."""

    def __init__(self, config: GatewayConfig, manager: SessionManager, peers: Peers | None = None) -> None:
        self._config = config
        self._manager = manager
        self._peers = peers  # the other worker processes, if this is one of several
        self._streams: set[StreamAudioCall] = set()
        self._relays: set[asyncio.Task[Any]] = set()  # streaming calls being relayed to their owner
        self._audio_relays: set[AudioRelay] = set()  # the StreamAudio calls among them
        self._going_away_by: float | None = None  # loop time the streams end by, once this process is stopping

    def _forwarder(self, moved: Elsewhere, context: Ctx) -> Forwarder:
        if self._peers is None or is_forwarded(context):
            # the directory and the owner disagree for a moment (a worker restarted): never forward twice
            raise errors.unavailable("the session's worker process is changing; retry shortly", "SESSION_MOVED",
                                     0.5)
        return Forwarder(self._peers.stub(moved.owner), context)

    def _caller(self, context: Ctx) -> Caller:
        if not self._config.api_keys:
            return ANONYMOUS
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise errors.unauthenticated("missing credentials: send 'authorization: Bearer <api key>'")
        presented = credentials.strip().encode()
        for key, caller in self._config.api_keys.items():
            if hmac.compare_digest(presented, key.encode()):
                return caller
        raise errors.unauthenticated("invalid API key")

    async def StartSession(self, request: pb.StartSessionRequest, context: Ctx) -> pb.StartSessionResponse:
        try:
            session = await self._manager.start(self._caller(context), request)
        except Elsewhere as moved:  # a retry of a request another worker took
            return await self._forwarder(moved, context).unary("StartSession", request)  # type: ignore[no-any-return]
        return pb.StartSessionResponse(session=session_pb(session))

    async def GetSession(self, request: pb.GetSessionRequest, context: Ctx) -> pb.GetSessionResponse:
        try:
            session = await self._manager.locate(self._caller(context), request.name)
        except Elsewhere as moved:
            return await self._forwarder(moved, context).unary("GetSession", request)  # type: ignore[no-any-return]
        return pb.GetSessionResponse(session=session_pb(session))

    async def ListSessions(self, request: pb.ListSessionsRequest, context: Ctx) -> pb.ListSessionsResponse:
        page, token = self._manager.list_page(self._caller(context), request.page_size, request.page_token,
                                              request.show_ended)
        if self._peers is None or is_forwarded(context):
            return pb.ListSessionsResponse(sessions=page, next_page_token=token)
        # every worker lists its own sessions from the same position; the merged page is the newest of them all
        others = await asyncio.gather(*(
            Forwarder(self._peers.stub(i), context).unary("ListSessions", request) for i in self._peers.others()))
        pages = [page, *(list(r.sessions) for r in others)]
        more = bool(token) or any(r.next_page_token for r in others)
        merged, next_token = paging.merge(pages, paging.page_size(request.page_size), more, request.show_ended)
        return pb.ListSessionsResponse(sessions=merged, next_page_token=next_token)

    async def EndSession(self, request: pb.EndSessionRequest, context: Ctx) -> pb.EndSessionResponse:
        try:
            session = await self._manager.end(self._caller(context), request.name)
        except Elsewhere as moved:
            return await self._forwarder(moved, context).unary("EndSession", request)  # type: ignore[no-any-return]
        return pb.EndSessionResponse(session=session_pb(session))

    async def WatchSession(self, request: pb.WatchSessionRequest, context: Ctx) -> None:
        try:
            session = await self._manager.locate(self._caller(context), request.name)
        except Elsewhere as moved:
            with self._relaying():
                await self._forwarder(moved, context).server_stream("WatchSession", request)
            return
        changes = session.watch()
        try:
            last: tuple[State, int] | None = None
            while True:
                snapshot = (session.state, int(session.end_reason))
                if snapshot != last:
                    await context.write(pb.WatchSessionResponse(session=session_pb(session)))
                    last = snapshot
                if snapshot[0] in TERMINAL:
                    return
                if session.state is snapshot[0]:
                    await changes.get()
        finally:
            session.unwatch(changes)

    async def StreamAudio(self, request_iterator: AsyncIterator[stream_pb.StreamAudioRequest], context: Ctx
                          ) -> None:
        try:
            await self._stream_audio(request_iterator, context)
        except errors.GatewayError as exc:
            if not exc.sent_in_band:
                # the proto's contract: a failing stream's last response is its status, in band, whatever failed
                with contextlib.suppress(Exception):
                    await context.write(stream_pb.StreamAudioResponse(error=exc.to_proto()))
            raise

    async def _stream_audio(self, request_iterator: AsyncIterator[stream_pb.StreamAudioRequest], context: Ctx
                            ) -> None:
        caller = self._caller(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "config":
            raise errors.invalid_argument("config", "the first message of StreamAudio must be config",
                                          "CONFIG_REQUIRED")
        config = first.config
        if not config.session:
            raise errors.invalid_argument("config.session", "config.session is required", "MISSING_FIELD")
        try:
            session = await self._manager.locate(caller, config.session, field="config.session")
        except Elsewhere as moved:
            relay = AudioRelay(self._forwarder(moved, context))
            self._audio_relays.add(relay)
            if self._going_away_by is not None:
                relay.notify(self._go_away_event())
            try:
                with self._relaying():
                    await relay.run(first, requests)
            finally:
                self._audio_relays.discard(relay)
            return
        if not config.HasField("format"):
            raise errors.invalid_argument("config.format", "config.format is required", "MISSING_FIELD")
        fmt = validate_format(config.format)
        if session.state is not State.ACTIVE:
            raise errors.failed_precondition(
                "SESSION_NOT_ACTIVE", f"session is {session.state.name}, not ACTIVE", subject=session.name,
                violation_type="SESSION_STATE", metadata={"session": session.name, "state": session.state.name})
        if session.params.audio_transport is AudioTransport.ROOM:
            raise errors.failed_precondition(
                "AUDIO_FROM_ROOM", "this session takes its audio from the room (lk.audio_stream to "
                f"{session.avatar_identity}), not from StreamAudio", subject=session.name,
                violation_type="SESSION_TRANSPORT", metadata={"session": session.name})
        sink = session.attach()
        if sink is None:
            raise errors.failed_precondition(
                "STREAM_ALREADY_OPEN", "another StreamAudio call is already open on this session",
                subject=session.name, violation_type="SESSION_STREAM", metadata={"session": session.name})
        stream = StreamAudioCall(session, sink, fmt, max_buffered_s=self._config.max_buffered_s,
                             max_chunk_bytes=self._config.max_chunk_bytes, metrics=self._manager.metrics)
        self._streams.add(stream)
        if self._going_away_by is not None:
            stream.notify(self._go_away_event())
        try:
            await stream.run(requests, context)
        finally:
            self._streams.discard(stream)
            # run() detaches when it ends, but not if it fails before its own try (writing `ready` to a call that
            # was just cancelled): the session would refuse every later stream with STREAM_ALREADY_OPEN
            session.detach(sink)

    async def ListProviders(self, request: pb.ListProvidersRequest, context: Ctx) -> pb.ListProvidersResponse:
        self._caller(context)
        return pb.ListProvidersResponse(providers=[provider_pb(a.info) for a in self._manager.registry])

    @contextlib.contextmanager
    def _relaying(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            yield
        finally:
            self._relays.discard(task)

    async def wait_relays(self, timeout_s: float) -> None:
        """Until the streams relayed to other workers have ended (their owners end them when they shut down)."""
        if self._relays:
            await asyncio.wait(list(self._relays), timeout=timeout_s)

    @property
    def open_streams(self) -> int:
        """StreamAudio calls being served here."""
        return len(self._streams)

    def go_away(self, time_left_s: float) -> None:
        """Tell every open audio stream the gateway is going away, those relayed to other workers too (their
        sessions may outlive this worker: their callers move their next stream); streams opened later are told
        as they open."""
        self._going_away_by = asyncio.get_running_loop().time() + time_left_s
        event = self._go_away_event()
        for stream in self._streams:
            stream.notify(event)
        for relay in self._audio_relays:
            relay.notify(event)

    def _go_away_event(self) -> GoAwayEvent:
        assert self._going_away_by is not None
        return GoAwayEvent(max(0.0, self._going_away_by - asyncio.get_running_loop().time()))
