"""The signalling WebSocket (``/rtc/v1`` and the older ``/rtc``) and the ``validate`` endpoints."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web
from livekit.protocol import models
from livekit.protocol import rtc as proto_rtc

from .auth import AuthError, VerifiedToken, check_join, token_from_request, verify_token
from .participant import Participant
from .room import RoomManager
from .tasks import TaskSet

logger = logging.getLogger("loopback")

_MAX_JOIN_REQUEST = 1 << 20
_SDK_NAMES = frozenset(models.ClientInfo.SDK.keys())


class WsSignal:
    """Queues SignalResponses and writes them, in order, as binary frames."""

    def __init__(self, ws: web.WebSocketResponse, tasks: TaskSet, name: str) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[proto_rtc.SignalResponse | None] = asyncio.Queue()
        self._closed = False
        self._writer = tasks.spawn(self._write_loop(), name=f"ws-writer:{name}")

    def send(self, message: proto_rtc.SignalResponse) -> None:
        if not self._closed:
            self._queue.put_nowait(message)

    async def _write_loop(self) -> None:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            try:
                await self._ws.send_bytes(message.SerializeToString())
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        """Flush what is queued (a LeaveRequest for instance), then close the socket."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._writer), timeout=2)
        if not self._writer.done():
            self._writer.cancel()
        with contextlib.suppress(Exception):
            await self._ws.close()


@dataclass
class JoinParams:
    single_pc: bool
    auto_subscribe: bool
    reconnect: bool
    client_info: models.ClientInfo
    publisher_offer: str | None = None
    metadata: str | None = None
    attributes: dict[str, str] | None = None


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value in ("1", "true")


def parse_join_params(request: web.Request, v1: bool) -> JoinParams:
    """Connection settings from the ``join_request`` parameter (v1) or the query string (v0)."""
    if not v1:
        info = models.ClientInfo(
            version=request.query.get("version", ""),
            protocol=int(request.query.get("protocol", "0") or 0),
            os=request.query.get("os", ""),
            os_version=request.query.get("os_version", ""),
            device_model=request.query.get("device_model", ""),
            client_protocol=int(request.query.get("client_protocol", "0") or 0),
        )
        sdk = request.query.get("sdk", "").upper()
        if sdk in _SDK_NAMES:
            info.sdk = models.ClientInfo.SDK.Value(sdk)  # type: ignore[assignment]
        return JoinParams(
            single_pc=False,
            auto_subscribe=_flag(request.query.get("auto_subscribe"), True),
            reconnect=_flag(request.query.get("reconnect"), False),
            client_info=info,
        )
    encoded = request.query.get("join_request", "")
    if not encoded:
        raise AuthError(400, "join_request is required")
    try:
        wrapped = proto_rtc.WrappedJoinRequest.FromString(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except Exception as exc:
        raise AuthError(400, "cannot unmarshal wrapped join request") from exc
    data = wrapped.join_request
    if wrapped.compression == proto_rtc.WrappedJoinRequest.GZIP:
        try:
            data = gzip.decompress(data)
        except OSError as exc:
            raise AuthError(400, "cannot read decompressed join request") from exc
    if len(data) > _MAX_JOIN_REQUEST:
        raise AuthError(400, "join request too large")
    try:
        join = proto_rtc.JoinRequest.FromString(data)
    except Exception as exc:
        raise AuthError(400, "cannot unmarshal join request") from exc
    offer = join.publisher_offer.sdp if join.HasField("publisher_offer") else None
    return JoinParams(
        single_pc=True,
        auto_subscribe=join.connection_settings.auto_subscribe if join.HasField("connection_settings") else True,
        reconnect=join.reconnect,
        client_info=join.client_info,
        publisher_offer=offer or None,
        metadata=join.metadata or None,
        attributes=dict(join.participant_attributes) or None,
    )


class SignallingService:
    def __init__(
        self,
        *,
        manager: RoomManager,
        tasks: TaskSet,
        keys: dict[str, str],
        rtc_v1: Callable[[], bool],
    ) -> None:
        self._manager = manager
        self._tasks = tasks
        self._keys = keys
        self._rtc_v1 = rtc_v1
        self.open_sockets = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/rtc", self._v0)
        app.router.add_get("/rtc/validate", self._v0_validate)
        app.router.add_get("/rtc/v1", self._v1)
        app.router.add_get("/rtc/v1/validate", self._v1_validate)

    def _validate(self, request: web.Request, v1: bool) -> tuple[VerifiedToken, str, JoinParams]:
        raw = token_from_request(request)
        if raw is None:
            raise AuthError(401, "permissions denied")
        token = verify_token(raw, self._keys)
        room = check_join(token)
        params = parse_join_params(request, v1)
        if params.metadata is not None and not token.video.can_update_own_metadata:
            raise AuthError(401, "permissions denied")
        return token, room, params

    async def _v0_validate(self, request: web.Request) -> web.Response:
        return self._validate_response(request, v1=False)

    async def _v1_validate(self, request: web.Request) -> web.Response:
        if not self._rtc_v1():
            raise web.HTTPNotFound()
        return self._validate_response(request, v1=True)

    def _validate_response(self, request: web.Request, v1: bool) -> web.Response:
        try:
            self._validate(request, v1)
        except AuthError as exc:
            return web.Response(status=exc.status, text=exc.message)
        return web.Response(text="success")

    async def _v0(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, v1=False)

    async def _v1(self, request: web.Request) -> web.StreamResponse:
        if not self._rtc_v1():
            # livekit clients fall back to /rtc only on a 404 here.
            raise web.HTTPNotFound()
        return await self._serve(request, v1=True)

    async def _serve(self, request: web.Request, v1: bool) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPNotFound()
        try:
            token, room_name, params = self._validate(request, v1)
        except AuthError as exc:
            return web.Response(status=exc.status, text=exc.message)
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        name = f"{room_name}/{token.claims.identity}"
        signal = WsSignal(ws, self._tasks, name)
        self.open_sockets += 1
        try:
            if params.reconnect:
                # No session resumption here: make the client do a full reconnect (a fresh join).
                signal.send(
                    proto_rtc.SignalResponse(
                        leave=proto_rtc.LeaveRequest(
                            can_reconnect=True,
                            reason=models.STATE_MISMATCH,
                            action=proto_rtc.LeaveRequest.RECONNECT,
                        )
                    )
                )
                await signal.close()
                return ws
            participant = await self._manager.join(
                room_name,
                token,
                signal,
                single_pc=params.single_pc,
                auto_subscribe=params.auto_subscribe,
                client_info=params.client_info,
                metadata=params.metadata,
                attributes=params.attributes,
            )
            try:
                await self._manager.start(participant, params.publisher_offer)
                await self._read_loop(ws, participant, signal)
            finally:
                await self._manager.disconnect(participant, models.CLIENT_INITIATED, send_leave=False)
        finally:
            await signal.close()
            self.open_sockets -= 1
        return ws

    async def _read_loop(self, ws: web.WebSocketResponse, participant: Participant, signal: WsSignal) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    return
                continue
            try:
                req = proto_rtc.SignalRequest.FromString(msg.data)
            except Exception:
                logger.warning("%s: undecodable signal request", participant.identity)
                continue
            if not participant.connected:
                return
            try:
                if await self._dispatch(participant, signal, req):
                    return
            except Exception:  # one bad request must not take the whole connection down
                logger.exception("%s: failed to handle %s", participant.identity, req.WhichOneof("message"))

    async def _dispatch(self, p: Participant, signal: WsSignal, req: proto_rtc.SignalRequest) -> bool:
        """Handle one request; True when the participant left."""
        kind = req.WhichOneof("message")
        manager = self._manager
        if kind == "ping_req":
            now = int(time.time() * 1000)
            signal.send(
                proto_rtc.SignalResponse(
                    pong_resp=proto_rtc.Pong(last_ping_timestamp=req.ping_req.timestamp, timestamp=now)
                )
            )
        elif kind == "ping":
            signal.send(proto_rtc.SignalResponse(pong=int(time.time() * 1000)))
        elif kind == "offer":
            await manager.handle_offer(p, req.offer.sdp)
        elif kind == "answer":
            if p.rtc is not None:
                await p.rtc.handle_answer(req.answer.sdp)
        elif kind == "trickle":
            if p.rtc is not None:
                await p.rtc.add_candidate(req.trickle.target, req.trickle.candidateInit)
        elif kind == "add_track":
            manager.handle_add_track(p, req.add_track)
        elif kind == "mute":
            manager.handle_mute(p, req.mute)
        elif kind == "subscription":
            await manager.handle_subscription(p, req.subscription)
        elif kind == "update_metadata":
            manager.handle_update_metadata(p, req.update_metadata)
        elif kind == "leave":
            await manager.disconnect(p, models.CLIENT_INITIATED, send_leave=False)
            return True
        return False
