"""A typed async client for avatar.v1.AvatarProvider, over the generated stubs."""

from __future__ import annotations

import uuid
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from avatar.v1 import avatar_provider_pb2 as pb
from avatar.v1 import avatar_provider_pb2_grpc as pb_grpc
from avatar.v1 import session_pb2
from google.protobuf import duration_pb2

from agent_client.audio_stream import AudioStream
from agent_client.errors import from_rpc_error
from agent_client.tls import ClientTls

Session = session_pb2.Session
ProviderInfo = pb.ProviderInfo

MAX_CONNECTIONS = 64
_HOMES_KEPT = 65536  # sessions whose connection the client remembers (the oldest are forgotten first)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


class AvatarGatewayClient:
    """Client for one gateway. `target` is host:port; `api_key` is sent as `authorization: Bearer <key>`.

    `connections` > 1 opens that many connections and starts sessions on them in turn; every later call about a
    session (stream, get, watch, end) goes over the connection that started it. A gateway running several worker
    processes gets each connection's sessions on one worker, so an agent server hosting many sessions spreads them
    over the workers instead of loading one.

    `tls` (`ClientTls`, loaded with `await ClientTls.load(...)`): connect with TLS, checking the gateway's
    certificate (and presenting this client's, for mutual TLS); None: plaintext.

    Every failed call raises agent_client.GatewayError with the decoded google.rpc details.
    """

    def __init__(self, target: str, *, api_key: str | None = None, timeout: float = 30.0,
                 channel: grpc.aio.Channel | None = None, connections: int = 1, tls: ClientTls | None = None
                 ) -> None:
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be 1 to {MAX_CONNECTIONS}")
        if channel is not None and connections != 1:
            raise ValueError("a client given a channel uses that one connection")
        if channel is not None and tls is not None:
            raise ValueError("a client given a channel uses that channel's credentials")
        options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
        if connections > 1:  # channels to one target share one connection unless each has its own pool
            options.append(("grpc.use_local_subchannel_pool", 1))
        if tls is not None:
            options.extend(tls.channel_options())
        self._channels = [channel] if channel is not None else [
            grpc.aio.insecure_channel(target, options=options) if tls is None
            else grpc.aio.secure_channel(target, tls.credentials(), options=options) for _ in range(connections)]
        self._own_channel = channel is None
        self._stubs: list[Any] = [pb_grpc.AvatarProviderStub(c) for c in self._channels]  # type: ignore[no-untyped-call]
        self._stub = self._stubs[0]  # calls about no session in particular
        self._homes: OrderedDict[str, int] = OrderedDict()  # session name -> the connection that started it
        self._next = 0
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout

    async def __aenter__(self) -> AvatarGatewayClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels (if this client opened them)."""
        if self._own_channel:
            for channel in self._channels:
                await channel.close()

    def connection_of(self, session: str) -> int:
        """Index of the connection calls about `session` use: the one that started it, if this client did."""
        home = self._homes.get(session)
        if home is None:
            return zlib.crc32(session.encode()) % len(self._stubs)
        return home

    async def _unary(self, method: str, request: Any, stub: Any = None) -> Any:
        try:
            return await getattr(stub or self._stub, method)(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

    async def start_session(
        self,
        provider: str,
        *,
        room_name: str,
        agent_identity: str,
        room_url: str = "",
        avatar_id: str = "",
        provider_options: Mapping[str, str] | None = None,
        width: int = 0,
        height: int = 0,
        fps: int = 0,
        idle_timeout: float | None = None,
        max_duration: float | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        session_id: str = "",
        video_delay: float | None = None,
        audio_transport: session_pb2.AudioTransport = session_pb2.AUDIO_TRANSPORT_UNSPECIFIED,
        fallbacks: Sequence[pb.ProviderChoice] = (),
    ) -> Session:
        """Start a session; returns it ACTIVE. A request_id is generated when none is given, so a retry of this
        call with the same id is safe. `audio_transport=AUDIO_TRANSPORT_ROOM`: the agent speaks to
        `Session.avatar_identity` with livekit-agents' DataStreamAudioOutput instead of StreamAudio. `fallbacks`:
        providers to start instead, in order, when `provider` is unavailable or at its quota."""
        req = pb.StartSessionRequest(
            provider=provider,
            room=session_pb2.RoomTarget(url=room_url, room_name=room_name, agent_identity=agent_identity),
            avatar_id=avatar_id,
            provider_options=dict(provider_options or {}),
            video=session_pb2.VideoFormat(width=width, height=height, fps=fps),
            labels=dict(labels or {}),
            request_id=request_id if request_id is not None else str(uuid.uuid4()),
            session_id=session_id,
            audio_transport=audio_transport,
            fallbacks=list(fallbacks),
        )
        if idle_timeout is not None:
            req.idle_timeout.CopyFrom(_duration(idle_timeout))
        if max_duration is not None:
            req.max_duration.CopyFrom(_duration(max_duration))
        if video_delay is not None:
            req.video_delay.CopyFrom(_duration(video_delay))
        home, self._next = self._next, (self._next + 1) % len(self._stubs)
        session: Session = (await self._unary("StartSession", req, self._stubs[home])).session
        if len(self._stubs) > 1:
            self._homes[session.name] = home
            if len(self._homes) > _HOMES_KEPT:
                self._homes.popitem(last=False)
        return session

    async def get_session(self, name: str) -> Session:
        """Read a session."""
        stub = self._stubs[self.connection_of(name)]
        return (await self._unary("GetSession", pb.GetSessionRequest(name=name), stub)).session  # type: ignore[no-any-return]

    async def list_sessions_page(self, *, page_size: int = 0, page_token: str = "", show_ended: bool = False
                                 ) -> tuple[list[Session], str]:
        """One page of sessions and the next page token."""
        resp = await self._unary("ListSessions", pb.ListSessionsRequest(page_size=page_size, page_token=page_token,
                                                                        show_ended=show_ended))
        return list(resp.sessions), resp.next_page_token

    async def list_sessions(self, *, page_size: int = 0, show_ended: bool = False) -> AsyncIterator[Session]:
        """Every session, following page tokens."""
        token = ""
        while True:
            page, token = await self.list_sessions_page(page_size=page_size, page_token=token, show_ended=show_ended)
            for s in page:
                yield s
            if not token:
                return

    async def end_session(self, name: str) -> Session:
        """End a session (idempotent); returns it terminal."""
        stub = self._stubs[self.connection_of(name)]
        session: Session = (await self._unary("EndSession", pb.EndSessionRequest(name=name), stub)).session
        self._homes.pop(name, None)
        return session

    async def watch_session(self, name: str) -> AsyncIterator[Session]:
        """The session's state now, then at every change, until it is terminal."""
        stub = self._stubs[self.connection_of(name)]
        call = stub.WatchSession(pb.WatchSessionRequest(name=name), metadata=self._metadata)
        try:
            async for resp in call:
                yield resp.session
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    async def list_providers(self) -> list[ProviderInfo]:
        """Every provider the gateway knows."""
        return list((await self._unary("ListProviders", pb.ListProvidersRequest())).providers)

    def stream_audio(self, session: str, *, sample_rate: int, channels: int = 1,
                     timeout: float | None = None) -> AudioStream:
        """An audio stream on a session; use `async with` (or `await stream.open()`)."""
        call = self._stubs[self.connection_of(session)].StreamAudio(timeout=timeout, metadata=self._metadata)
        return AudioStream(call, session, sample_rate, channels)
