"""The gateway's LiveKit server access for one session's room (providers.room_admin): vendor workers' tokens,
removing participants. Holds the LiveKit credentials; a pipeline only gets the tokens it asks for."""

from __future__ import annotations

import logging

from livekit import api

from gateway.tokens import mint_avatar_token
from providers.room_admin import RoomAdmin

log = logging.getLogger(__name__)

WORKER_TOKEN_TTL_S = 120  # long enough to join; the server refreshes a connected participant's token itself


class GatewayRoomAdmin(RoomAdmin):
    """RoomService and token minting for `room_name` on behalf of `agent_identity`."""

    def __init__(self, *, url: str, api_key: str, api_secret: str, room_name: str, agent_identity: str,
                 provider: str) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._room = room_name
        self._agent = agent_identity
        self._provider = provider

    def worker_token(self, identity: str, *, can_subscribe: bool) -> str:
        return mint_avatar_token(api_key=self._key, api_secret=self._secret, room_name=self._room,
                                 identity=identity, agent_identity=self._agent, provider=self._provider,
                                 can_subscribe=can_subscribe, ttl_s=WORKER_TOKEN_TTL_S)

    async def remove_participant(self, identity: str) -> None:
        lkapi = api.LiveKitAPI(self._url, self._key, self._secret)
        try:
            await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=self._room, identity=identity))
        except api.TwirpError as err:
            if err.code != "not_found":
                log.warning("could not remove %s from room %s: %s", identity, self._room, err.code)
        except Exception as exc:
            log.warning("could not remove %s from room %s: %s", identity, self._room, type(exc).__name__)
        finally:
            await lkapi.aclose()

