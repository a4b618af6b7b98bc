"""A typed async client for avatar.v1.AvatarProvider, over the generated stubs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import grpc
from avatar.v1 import avatar_provider_pb2 as pb
from avatar.v1 import avatar_provider_pb2_grpc as pb_grpc
from avatar.v1 import session_pb2
from google.protobuf import duration_pb2

from agent_client.audio_stream import AudioStream
from agent_client.errors import from_rpc_error

Session = session_pb2.Session
ProviderInfo = pb.ProviderInfo


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


class AvatarGatewayClient:
    """Client for one gateway. `target` is host:port; `api_key` is sent as `authorization: Bearer <key>`.

    Every failed call raises agent_client.GatewayError with the decoded google.rpc details.
    """

    def __init__(self, target: str, *, api_key: str | None = None, timeout: float = 30.0,
                 channel: grpc.aio.Channel | None = None) -> None:
        self._channel = channel or grpc.aio.insecure_channel(target, options=[
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ])
        self._own_channel = channel is None
        self._stub: Any = pb_grpc.AvatarProviderStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout

    async def __aenter__(self) -> AvatarGatewayClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (if this client opened it)."""
        if self._own_channel:
            await self._channel.close()

    async def _unary(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout, metadata=self._metadata)
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
    ) -> Session:
        """Start a session; returns it ACTIVE. A request_id is generated when none is given, so a retry of this
        call with the same id is safe."""
        req = pb.StartSessionRequest(
            provider=provider,
            room=session_pb2.RoomTarget(url=room_url, room_name=room_name, agent_identity=agent_identity),
            avatar_id=avatar_id,
            provider_options=dict(provider_options or {}),
            video=session_pb2.VideoFormat(width=width, height=height, fps=fps),
            labels=dict(labels or {}),
            request_id=request_id if request_id is not None else str(uuid.uuid4()),
            session_id=session_id,
        )
        if idle_timeout is not None:
            req.idle_timeout.CopyFrom(_duration(idle_timeout))
        if max_duration is not None:
            req.max_duration.CopyFrom(_duration(max_duration))
        if video_delay is not None:
            req.video_delay.CopyFrom(_duration(video_delay))
        resp = await self._unary("StartSession", req)
        return resp.session  # type: ignore[no-any-return]

    async def get_session(self, name: str) -> Session:
        """Read a session."""
        return (await self._unary("GetSession", pb.GetSessionRequest(name=name))).session  # type: ignore[no-any-return]

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
        return (await self._unary("EndSession", pb.EndSessionRequest(name=name))).session  # type: ignore[no-any-return]

    async def watch_session(self, name: str) -> AsyncIterator[Session]:
        """The session's state now, then at every change, until it is terminal."""
        call = self._stub.WatchSession(pb.WatchSessionRequest(name=name), metadata=self._metadata)
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
        call = self._stub.StreamAudio(timeout=timeout, metadata=self._metadata)
        return AudioStream(call, session, sample_rate, channels)
