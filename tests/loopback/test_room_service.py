"""The RoomService Twirp API, driven by livekit-api's LiveKitAPI against the loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models

from loopback import LoopbackServer
from tests.loopback.loopback_helpers import API_KEY, API_SECRET, ConnectFn, requires_netns

pytestmark = requires_netns


@pytest.fixture
async def lkapi(server: LoopbackServer) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(server.url, API_KEY, API_SECRET)
    try:
        yield client
    finally:
        await client.aclose()


async def test_list_get_and_remove_participants(
    server: LoopbackServer, connect: ConnectFn, lkapi: api.LiveKitAPI
) -> None:
    await connect("agent", kind="agent", attributes={"lk.publish_on_behalf": "agent-0"})
    avatar = await connect("avatar")
    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="room"))
    by_identity = {p.identity: p for p in listed.participants}
    assert set(by_identity) == {"agent", "avatar"}
    assert by_identity["agent"].kind == models.ParticipantInfo.AGENT
    assert dict(by_identity["agent"].attributes) == {"lk.publish_on_behalf": "agent-0"}
    got = await lkapi.room.get_participant(api.RoomParticipantIdentity(room="room", identity="avatar"))
    assert got.sid == avatar.local.sid

    await lkapi.room.remove_participant(api.RoomParticipantIdentity(room="room", identity="avatar"))
    (reason,) = await avatar.events.wait("disconnected")
    assert reason == models.DisconnectReason.PARTICIPANT_REMOVED
    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="room"))
    assert [p.identity for p in listed.participants] == ["agent"]

    with pytest.raises(api.TwirpError) as info:
        await lkapi.room.remove_participant(api.RoomParticipantIdentity(room="room", identity="avatar"))
    assert info.value.status == 404 and info.value.code == "not_found"


async def test_list_and_delete_rooms(server: LoopbackServer, connect: ConnectFn, lkapi: api.LiveKitAPI) -> None:
    one = await connect("one", room="first")
    await connect("two", room="second")
    rooms = await lkapi.room.list_rooms(api.ListRoomsRequest())
    assert sorted(r.name for r in rooms.rooms) == ["first", "second"]
    assert all(r.sid.startswith("RM_") for r in rooms.rooms)
    await lkapi.room.delete_room(api.DeleteRoomRequest(room="first"))
    (reason,) = await one.events.wait("disconnected")
    assert reason == models.DisconnectReason.ROOM_DELETED
    rooms = await lkapi.room.list_rooms(api.ListRoomsRequest())
    assert [r.name for r in rooms.rooms] == ["second"]


async def test_grants_are_checked(server: LoopbackServer, connect: ConnectFn) -> None:
    await connect("someone")
    wrong = api.LiveKitAPI(server.url, API_KEY, "wrong-secret-" + "y" * 24)
    try:
        with pytest.raises(api.TwirpError) as info:
            await wrong.room.list_participants(api.ListParticipantsRequest(room="room"))
        assert info.value.status == 401 and info.value.code == "unauthenticated"
    finally:
        await wrong.aclose()
    # roomAdmin for another room does not cover this one.
    token = server.create_token("admin", "other", grants=api.VideoGrants(room_admin=True, room="other"))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.http_url}/twirp/livekit.RoomService/ListParticipants",
            json={"room": "room"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "unauthenticated"
        # JSON bodies work, and so do JSON answers.
        token = server.create_token("admin", "room", grants=api.VideoGrants(room_admin=True, room="room"))
        async with http.post(
            f"{server.http_url}/twirp/livekit.RoomService/ListParticipants",
            json={"room": "room"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert [p["identity"] for p in body["participants"]] == ["someone"]
        async with http.post(
            f"{server.http_url}/twirp/livekit.RoomService/NoSuchMethod",
            json={},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "bad_route"
