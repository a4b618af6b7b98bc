"""The RoomService Twirp API (``POST /twirp/livekit.RoomService/<Method>``), protobuf or JSON bodies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit.protocol import models
from livekit.protocol import room as proto_room

from .auth import AuthError, VerifiedToken, require_admin, require_create, require_list, token_from_request
from .auth import verify_token as _verify
from .room import RoomManager

logger = logging.getLogger("loopback")

_STATUS = {
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "bad_route": 404,
    "invalid_argument": 400,
    "malformed": 400,
    "unimplemented": 501,
    "internal": 500,
}


class TwirpError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


Handler = Callable[[Any, VerifiedToken], Awaitable[Message]]


class RoomService:
    def __init__(self, manager: RoomManager, keys: dict[str, str]) -> None:
        self._manager = manager
        self._keys = keys
        self._methods: dict[str, tuple[type[Message], Handler]] = {
            "ListRooms": (proto_room.ListRoomsRequest, self._list_rooms),
            "DeleteRoom": (proto_room.DeleteRoomRequest, self._delete_room),
            "ListParticipants": (proto_room.ListParticipantsRequest, self._list_participants),
            "GetParticipant": (proto_room.RoomParticipantIdentity, self._get_participant),
            "RemoveParticipant": (proto_room.RoomParticipantIdentity, self._remove_participant),
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/twirp/livekit.RoomService/{method}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        use_json = request.content_type == "application/json"
        try:
            entry = self._methods.get(method)
            if entry is None:
                raise TwirpError("bad_route", f"no handler for path {request.path!r}")
            request_type, handler = entry
            token = self._authenticate(request)
            body = await request.read()
            message = request_type()
            try:
                if use_json:
                    json_format.Parse(body or b"{}", message, ignore_unknown_fields=True)
                else:
                    message.ParseFromString(body)
            except Exception as exc:
                raise TwirpError("malformed", f"failed to parse request body: {exc}") from exc
            response = await handler(message, token)
        except TwirpError as exc:
            return web.json_response({"code": exc.code, "msg": exc.msg}, status=_STATUS.get(exc.code, 500))
        if use_json:
            text = json_format.MessageToJson(response, preserving_proto_field_name=True)
            return web.Response(text=text, content_type="application/json")
        return web.Response(body=response.SerializeToString(), content_type="application/protobuf")

    def _authenticate(self, request: web.Request) -> VerifiedToken:
        try:
            raw = token_from_request(request)
            if raw is None:
                raise AuthError(401, "permissions denied")
            return _verify(raw, self._keys)
        except AuthError as exc:
            raise TwirpError("unauthenticated", exc.message) from exc

    @staticmethod
    def _check(check: Callable[[], None]) -> None:
        try:
            check()
        except AuthError as exc:
            raise TwirpError("unauthenticated", exc.message) from exc

    async def _list_rooms(self, req: proto_room.ListRoomsRequest, token: VerifiedToken) -> Message:
        self._check(lambda: require_list(token))
        rooms = [r.info() for r in self._manager.rooms.values() if not req.names or r.name in req.names]
        return proto_room.ListRoomsResponse(rooms=rooms)

    async def _delete_room(self, req: proto_room.DeleteRoomRequest, token: VerifiedToken) -> Message:
        self._check(lambda: require_create(token))
        if not await self._manager.delete_room(req.room):
            raise TwirpError("not_found", "requested room does not exist")
        return proto_room.DeleteRoomResponse()

    async def _list_participants(self, req: proto_room.ListParticipantsRequest, token: VerifiedToken) -> Message:
        self._check(lambda: require_admin(token, req.room))
        room = self._manager.rooms.get(req.room)
        participants: list[models.ParticipantInfo] = []
        if room is not None:
            participants = [p.info() for p in room.participants.values() if p.connected]
        return proto_room.ListParticipantsResponse(participants=participants)

    async def _get_participant(self, req: proto_room.RoomParticipantIdentity, token: VerifiedToken) -> Message:
        self._check(lambda: require_admin(token, req.room))
        room = self._manager.rooms.get(req.room)
        participant = room.participants.get(req.identity) if room else None
        if participant is None:
            raise TwirpError("not_found", "participant does not exist")
        return participant.info()

    async def _remove_participant(self, req: proto_room.RoomParticipantIdentity, token: VerifiedToken) -> Message:
        self._check(lambda: require_admin(token, req.room))
        if not await self._manager.remove_participant(req.room, req.identity):
            raise TwirpError("not_found", "participant does not exist")
        return proto_room.RemoveParticipantResponse()
