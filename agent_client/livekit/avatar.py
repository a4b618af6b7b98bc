"""`AvatarSession`: a LiveKit Agents avatar plugin backed by the avatar gateway.

    avatar = AvatarSession(gateway="host:port", provider="mock")
    await avatar.start(session, room)   # before session.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import grpc
from avatar.v1 import session_pb2
from livekit import rtc
from livekit.agents import utils
from livekit.agents.voice.agent_session import AgentSession
from livekit.agents.voice.avatar import AvatarSession as _LiveKitAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput

from agent_client.audio_stream import AudioStream
from agent_client.client import AvatarGatewayClient, Session
from agent_client.errors import GatewayError
from agent_client.livekit.audio_output import GatewayAudioOutput
from agent_client.livekit.embedded import EmbeddedGateway
from agent_client.tls import ClientTls

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
GATEWAY_ENV = "AVATAR_GATEWAY_URL"
API_KEY_ENV = "AVATAR_GATEWAY_API_KEY"
START_ATTEMPTS = 3
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class AvatarJoinError(RuntimeError):
    """The avatar did not appear in the room (joined with its video track) in time, or the room closed first."""


class AvatarSession(_LiveKitAvatarSession[Any]):
    """An avatar rendered by the avatar gateway, for a LiveKit Agents `AgentSession`.

    `gateway`: `host:port` (or any gRPC target), `"embedded"` to run the gateway inside this process on a private
    Unix socket, or None for AVATAR_GATEWAY_URL. `api_key`: sent as `authorization: Bearer`, or
    AVATAR_GATEWAY_API_KEY. `options` are the provider's options. `join_timeout`: how long the avatar may take to
    be in the room with its video track; past it, the first speech raises `AvatarJoinError` (as does
    `wait_for_join()`), and the gateway session is ended. `livekit_*` configure the embedded gateway (default:
    LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET). `tls`: a `ClientTls`, True for TLS with the system's
    roots, False for plaintext, or None for the environment (AVATAR_GATEWAY_TLS=1, AVATAR_GATEWAY_CA_FILE,
    AVATAR_GATEWAY_CLIENT_CERT / AVATAR_GATEWAY_CLIENT_KEY); the embedded gateway needs none.
    """

    def __init__(
        self,
        *,
        gateway: str | None = None,
        provider: str = "mock",
        avatar_id: str = "",
        options: Mapping[str, str] | None = None,
        api_key: str | None = None,
        width: int = 0,
        height: int = 0,
        fps: int = 0,
        idle_timeout: float | None = None,
        max_duration: float | None = None,
        video_delay: float | None = None,
        labels: Mapping[str, str] | None = None,
        room_url: str = "",
        session_id: str = "",
        join_timeout: float = 30.0,
        livekit_url: str | None = None,
        livekit_api_key: str | None = None,
        livekit_api_secret: str | None = None,
        tls: ClientTls | bool | None = None,
    ) -> None:
        super().__init__()
        target = gateway or os.environ.get(GATEWAY_ENV, "")
        if not target:
            raise ValueError(f"no avatar gateway: pass gateway= or set {GATEWAY_ENV}")
        self._target = target
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self._tls = tls
        self._provider = provider
        self._start_args: dict[str, Any] = {
            "avatar_id": avatar_id, "provider_options": dict(options or {}), "width": width, "height": height,
            "fps": fps, "idle_timeout": idle_timeout, "max_duration": max_duration, "video_delay": video_delay,
            "labels": dict(labels or {}), "room_url": room_url,
            "session_id": session_id,
        }
        self._join_timeout = join_timeout
        self._embedded = (EmbeddedGateway(livekit_url=livekit_url, livekit_api_key=livekit_api_key,
                                          livekit_api_secret=livekit_api_secret)
                          if target == EMBEDDED else None)
        self._request_id = str(uuid.uuid4())  # the same for every retry of this avatar's StartSession
        self._client: AvatarGatewayClient | None = None
        self._session: Session | None = None
        self._output: GatewayAudioOutput | None = None
        self._direct_output: DataStreamAudioOutput | None = None
        self._ready: asyncio.Task[None] | None = None
        self._first_frame: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None  # why the avatar failed, if it did
        self._started_at = 0.0
        self._lk_room: rtc.Room | None = None
        self._lk_agent_session: AgentSession[Any] | None = None

    # -- what livekit-agents asks of an avatar plugin
    @property
    def avatar_identity(self) -> str:
        return self._session.avatar_identity if self._session is not None else ""

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def session(self) -> Session | None:
        """The gateway session (None before start)."""
        return self._session

    @property
    def audio_output(self) -> GatewayAudioOutput | None:
        """The agent's audio sink this avatar installed (None before start, and when it speaks directly)."""
        return self._output

    @property
    def direct(self) -> bool:
        """Whether the agent streams to the avatar itself (a vendor's worker that plays the first agent in the
        room): the gateway then starts, watches and stops the vendor, and the sink is `direct_output`."""
        return bool(self._start_args.get("audio_transport"))

    @property
    def direct_output(self) -> DataStreamAudioOutput | None:
        """The livekit-agents sink speaking to the vendor's worker, when `direct`."""
        return self._direct_output

    @property
    def gateway_target(self) -> str:
        """The gRPC target in use (the embedded gateway's Unix socket once started)."""
        return self._embedded.target if self._embedded is not None else self._target

    async def start(self, agent_session: AgentSession[Any], room: rtc.Room) -> None:
        """Start the avatar in `room` (connected; the agent's room) and route the agent's speech to it. Call before
        `agent_session.start()`. Raises GatewayError if the gateway refuses the session."""
        if not room.isconnected():
            raise RuntimeError("AvatarSession.start needs a connected room")
        if self._client is not None:
            raise RuntimeError("AvatarSession.start was already called")
        self._started_at = time.monotonic()
        self._lk_room = room
        try:  # whatever fails from here on, the gateway session (and an embedded gateway) is ended
            target = await self._embedded.start() if self._embedded is not None else self._target
            tls = None if self._embedded is not None else await self._client_tls()
            self._client = AvatarGatewayClient(target, api_key=self._api_key, tls=tls)
            self._session = await self._start_session(room.name, room.local_participant.identity)
            log.info("avatar session %s started (%s, avatar %s) in %.0f ms", self._session.name, self._provider,
                     self._session.avatar_identity, (time.monotonic() - self._started_at) * 1000)
            await super().start(agent_session, room)  # metrics, job shutdown callback -> aclose
            room.on("disconnected", self._on_room_disconnected)
            room.on("connection_state_changed", self._on_connection_state)
            agent_session.on("close", self._on_agent_session_closed)
            self._lk_agent_session = agent_session
            self._ready = asyncio.create_task(self._wait_ready(room), name="avatar-join")
            self._first_frame = asyncio.create_task(self._log_first_frame(room), name="avatar-first-frame")
            if self.direct:
                self._direct_output = DataStreamAudioOutput(
                    room, destination_identity=self.avatar_identity, wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                    sample_rate=self._session.provider_audio_format.sample_rate_hz)
                agent_session.output.replace_audio_tail(self._direct_output)
            else:
                self._output = GatewayAudioOutput(open_stream=self._open_stream, ready=self._await_ready)
                agent_session.output.replace_audio_tail(self._output)
        except BaseException:
            await self.aclose()
            raise

    async def _client_tls(self) -> ClientTls | None:
        if isinstance(self._tls, ClientTls):
            return self._tls
        if self._tls is None:
            return await ClientTls.from_env(os.environ)
        return ClientTls() if self._tls else None

    async def _start_session(self, room_name: str, agent_identity: str) -> Session:
        assert self._client is not None
        for attempt in range(START_ATTEMPTS):
            try:
                return await self._client.start_session(self._provider, room_name=room_name,
                                                        agent_identity=agent_identity,
                                                        request_id=self._request_id, **self._start_args)
            except GatewayError as err:
                if err.reason == "AGENT_IN_ROOM" and not self.direct:
                    # a vendor that plays the first agent it finds, and this agent is in the room: it streams to
                    # the vendor itself (the room transport), the gateway starts, watches and stops the vendor
                    log.info("%s plays the agent's own audio stream: speaking to it directly", self._provider)
                    self._start_args["audio_transport"] = session_pb2.AUDIO_TRANSPORT_ROOM
                    return await self._start_session(room_name, agent_identity)
                if err.code not in _RETRYABLE or attempt == START_ATTEMPTS - 1:
                    raise
                delay = err.retry_after if err.retry_after is not None else 0.5 * 2**attempt
                log.warning("avatar StartSession failed (%s); retrying in %.1f s", err, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _open_stream(self, sample_rate: int, channels: int) -> AudioStream:
        assert self._client is not None and self._session is not None
        return await self._client.stream_audio(self._session.name, sample_rate=sample_rate,
                                               channels=channels).open()

    async def wait_for_join(self, *, timeout: float | None = 30.0) -> None:  # noqa: ASYNC109 (the base's signature)
        """Until the avatar is in the room with its video track; AvatarJoinError if it never came within the
        join timeout, TimeoutError past `timeout`."""
        if self._ready is None:
            raise RuntimeError("AvatarSession.start was not called")
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._ready)

    async def _await_ready(self) -> None:
        if self._ready is None:
            raise AvatarJoinError("the avatar session is closed")
        await asyncio.shield(self._ready)

    async def _wait_ready(self, room: rtc.Room) -> None:
        identity = self.avatar_identity
        try:
            async with asyncio.timeout(self._join_timeout):
                await utils.wait_for_participant(room=room, identity=identity)
                await utils.wait_for_track_publication(room=room, identity=identity, kind=rtc.TrackKind.KIND_VIDEO)
        except TimeoutError:
            err = AvatarJoinError(f"avatar {identity} did not join room {room.name} with its video within "
                                  f"{self._join_timeout:g} s")
            log.error("%s; ending the avatar session", err)
            self._failure = err
            self._close_soon()
            raise err from None
        except RuntimeError as exc:  # the room disconnected while waiting
            raise AvatarJoinError(f"avatar {identity} did not join: {exc}") from exc
        log.info("avatar %s joined with video %.0f ms after start", identity,
                 (time.monotonic() - self._started_at) * 1000)

    async def _log_first_frame(self, room: rtc.Room) -> None:
        """Time to the avatar's first video frame as this agent receives it, when its room subscribes to the
        avatar's video (auto-subscribe); this never subscribes for it. Bounded by the join timeout."""
        identity = self.avatar_identity
        try:
            async with asyncio.timeout(self._join_timeout):
                if self._ready is not None:
                    await asyncio.shield(self._ready)
                participant = room.remote_participants.get(identity)
                pub = next((p for p in (participant.track_publications.values() if participant else ())
                            if p.kind == rtc.TrackKind.KIND_VIDEO), None)
                if pub is None:
                    return
                track = pub.track or await _subscribed_track(room, pub.sid)
                stream = rtc.VideoStream(track)
                try:
                    async for _ in stream:
                        log.info("avatar %s: first video frame %.0f ms after start", identity,
                                 (time.monotonic() - self._started_at) * 1000)
                        break
                finally:
                    await stream.aclose()
        except TimeoutError:
            log.debug("the agent does not subscribe to the avatar's video: time to first frame not measured")
        except RuntimeError:
            pass  # the avatar never came: said where that is handled

    # -- every exit path ends the gateway session
    def _on_room_disconnected(self, *_: object) -> None:
        if self._closing is None:
            log.info("the agent's room closed; ending the avatar session")
        self._close_soon()

    def _on_connection_state(self, state: rtc.ConnectionState.ValueType) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED:
            self._on_room_disconnected()

    def _on_agent_session_closed(self, *_: object) -> None:
        if self._closing is None:
            log.info("the agent session closed; ending the avatar session")
        self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())

    async def aclose(self) -> None:
        """End the gateway session (the avatar leaves the room), stop the embedded gateway. Idempotent."""
        self._close_soon()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        if self._lk_room is not None:
            self._lk_room.off("disconnected", self._on_room_disconnected)
            self._lk_room.off("connection_state_changed", self._on_connection_state)
        if self._lk_agent_session is not None:
            self._lk_agent_session.off("close", self._on_agent_session_closed)
        if self._output is not None:
            await self._output.aclose(self._failure)
        for task in (self._ready, self._first_frame):
            if task is not None and task is not current and not task.done():
                await utils.aio.cancel_and_wait(task)
        if self._client is not None and self._session is not None:
            try:
                ended = await self._client.end_session(self._session.name)
                log.info("avatar session %s ended", ended.name)
            except GatewayError as err:
                log.warning("could not end avatar session %s: %s", self._session.name, err)
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._embedded is not None:
            await self._embedded.stop()
        if self._agent_session is not None or self._room is not None:
            with contextlib.suppress(Exception):
                await super().aclose()


async def _subscribed_track(room: rtc.Room, sid: str) -> rtc.Track:
    """The track of publication `sid`, once this participant's subscription to it completes."""
    fut: asyncio.Future[rtc.Track] = asyncio.get_running_loop().create_future()

    def on_subscribed(track: rtc.Track, pub: rtc.RemoteTrackPublication, _: rtc.RemoteParticipant) -> None:
        if pub.sid == sid and not fut.done():
            fut.set_result(track)

    room.on("track_subscribed", on_subscribed)
    try:
        return await fut
    finally:
        room.off("track_subscribed", on_subscribed)
