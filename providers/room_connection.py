"""The avatar participant's connection to its LiveKit room: join with the gateway-minted token, report a lost
connection, leave. Every pipeline shape that has the gateway in the room (publishing frames, relaying audio to a
vendor's participant) uses this one class."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from livekit import rtc

from providers import sdk_logs
from providers.base import RoomSpec

log = logging.getLogger(__name__)


class RoomJoinError(Exception):
    """The avatar could not join or publish. The message never contains the token."""


class RoomConnection:
    """One participant in one room. `on_lost` is called (once) when the connection drops while not leaving;
    `on_joined` when it has joined."""

    def __init__(self, spec: RoomSpec, *, on_lost: Callable[[str], None] | None = None,
                 on_joined: Callable[[rtc.Room], None] | None = None) -> None:
        self.spec = spec
        self._on_lost = on_lost
        self._on_joined = on_joined
        self._room: rtc.Room | None = None
        self._leaving = False
        self._lost = False

    async def join(self) -> rtc.Room:
        """Connect; RoomJoinError (naming the room, never the token or URL query) if that fails. `on_joined` runs
        once connected, before anything is published."""
        sdk_logs.install()
        room = rtc.Room()
        room.on("disconnected", self._disconnected)
        self._room = room
        try:
            await room.connect(self.spec.url, self.spec.token, rtc.RoomOptions(auto_subscribe=False))
        except Exception as exc:
            raise self.join_error(exc) from None
        if self._on_joined is not None:
            self._on_joined(room)
        return room

    def join_error(self, exc: BaseException) -> RoomJoinError:
        """The caller-safe error for a failed join or publish. rtc errors can echo the URL with the token as a
        query parameter: their text is never passed on, only logged by type."""
        log.warning("avatar %s could not join room %s: %s", self.spec.avatar_identity, self.spec.room_name,
                    type(exc).__name__)
        return RoomJoinError(f"the avatar could not join room {self.spec.room_name!r}")

    def _disconnected(self, reason: object) -> None:
        if self._leaving or self._lost or self._on_lost is None:
            return
        self._lost = True
        self._on_lost(str(reason))

    async def leave(self) -> None:
        """Disconnect (idempotent; never raises)."""
        self._leaving = True
        room, self._room = self._room, None
        if room is not None:
            with contextlib.suppress(Exception):
                await room.disconnect()
