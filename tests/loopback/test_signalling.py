"""Connecting with the real SDK: /rtc/v1, the /rtc fallback, refused tokens, identity replacement."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import jwt
import pytest
from livekit import api, rtc
from livekit.protocol import models
from livekit.protocol import rtc as proto_rtc

from loopback import LoopbackServer, loopback_host
from tests.loopback.loopback_helpers import API_KEY, API_SECRET, ConnectFn, requires_netns

pytestmark = requires_netns

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_connect_rtc_v1_single_peer_connection(server: LoopbackServer, connect: ConnectFn) -> None:
    alice = await connect("alice", name="Alice", metadata="m1")
    bob = await connect("bob")
    assert alice.local.sid.startswith("PA_")
    assert alice.room.name == "room"
    await alice.events.wait("participant_connected", lambda p: p.identity == "bob")
    assert set(bob.room.remote_participants) == {"alice"}
    assert bob.room.remote_participants["alice"].name == "Alice"
    assert bob.room.remote_participants["alice"].metadata == "m1"
    state = await server.wait_for(lambda s: all(p.state == "ACTIVE" for p in s.rooms["room"].participants.values()))
    assert {p.single_pc for p in state.rooms["room"].participants.values()} == {True}
    assert {p.peer_connections for p in state.rooms["room"].participants.values()} == {1}


async def test_connect_falls_back_to_rtc_when_v1_is_404(connect: ConnectFn) -> None:
    async with LoopbackServer(loopback_host(), 0, API_KEY, API_SECRET, rtc_v1=False) as srv:
        room = rtc.Room()
        await room.connect(srv.url, srv.create_token("carol", "legacy"))
        try:
            state = await srv.wait_for(lambda s: s.participant("legacy", "carol") is not None)
            carol = state.participant("legacy", "carol")
            assert carol is not None and not carol.single_pc
            assert room.local_participant.identity == "carol"
        finally:
            await room.disconnect()
        await srv.wait_for(lambda s: not s.rooms)


def _forged(claims: dict[str, object], secret: str = API_SECRET, key: str = API_KEY) -> str:
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    body = {"iss": key, "nbf": now - 5, "exp": now + 600, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


async def _connect_error(server: LoopbackServer, token: str) -> str:
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError) as info:
        await room.connect(server.url, token)
    return str(info.value.message)


async def test_bad_signature_refused(server: LoopbackServer) -> None:
    token = (
        api.AccessToken(API_KEY, "not-the-secret-" + "x" * 24)
        .with_identity("mallory")
        .with_grants(api.VideoGrants(room_join=True, room="room"))
        .to_jwt()
    )
    message = await _connect_error(server, token)
    assert "401" in message and "invalid authorization token" in message
    assert not server.state().rooms


async def test_expired_token_refused(server: LoopbackServer) -> None:
    token = server.create_token("late", "room", ttl=datetime.timedelta(minutes=-10))
    message = await _connect_error(server, token)
    assert "401" in message and "expired" in message.lower()


async def test_unknown_api_key_refused(server: LoopbackServer) -> None:
    message = await _connect_error(server, _forged({"sub": "x", "video": {"roomJoin": True, "room": "r"}}, key="other"))
    assert "401" in message and "invalid API key" in message


async def test_token_without_room_join_refused(server: LoopbackServer) -> None:
    # A grant for room administration only: joining any room is outside the grant.
    token = server.create_token("admin", "room", grants=api.VideoGrants(room_admin=True, room="room"))
    message = await _connect_error(server, token)
    assert "401" in message and "permissions denied" in message


async def test_token_without_room_refused(server: LoopbackServer) -> None:
    message = await _connect_error(server, _forged({"sub": "nobody", "video": {"roomJoin": True}}))
    assert "400" in message and "no room name" in message


async def test_ws_upgrade_refusal_is_http_401_with_message(server: LoopbackServer) -> None:
    bad = server.create_token("late", "room", ttl=datetime.timedelta(minutes=-10))
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{server.http_url}/rtc",
            headers={"Authorization": f"Bearer {bad}", "Upgrade": "websocket", "Connection": "Upgrade"},
        ) as resp:
            assert resp.status == 401
            assert "invalid authorization token" in await resp.text()
        good = server.create_token("ok", "room")
        async with http.get(f"{server.http_url}/rtc/validate", headers={"Authorization": f"Bearer {good}"}) as resp:
            assert resp.status == 200 and await resp.text() == "success"


async def test_same_identity_replaces_first_connection(server: LoopbackServer, connect: ConnectFn) -> None:
    first = await connect("dup")
    watcher = await connect("watcher")
    old_sid = first.local.sid
    assert watcher.room.remote_participants["dup"].sid == old_sid
    second = await connect("dup")
    assert second.local.sid != old_sid
    (reason,) = await first.events.wait("disconnected")
    assert reason == models.DisconnectReason.DUPLICATE_IDENTITY
    await watcher.events.wait("participant_disconnected", lambda p: p.sid == old_sid)
    await watcher.events.wait("participant_connected", lambda p: p.identity == "dup" and p.sid == second.local.sid)
    state = await server.wait_for(lambda s: s.participant("room", "dup") is not None)
    dup = state.participant("room", "dup")
    assert dup is not None and dup.sid == second.local.sid
    assert len(state.rooms["room"].participants) == 2


async def test_attributes_kind_and_metadata_visible_to_others(connect: ConnectFn) -> None:
    agent = await connect("agent-1", kind="agent", attributes={"lk.publish_on_behalf": "user-agent"}, metadata="{}")
    viewer = await connect("viewer")
    remote = viewer.room.remote_participants["agent-1"]
    assert remote.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    assert remote.attributes == {"lk.publish_on_behalf": "user-agent"}
    assert remote.metadata == "{}"
    assert agent.local.attributes == {"lk.publish_on_behalf": "user-agent"}


async def test_set_attributes_needs_can_update_own_metadata(server: LoopbackServer, connect: ConnectFn) -> None:
    editor = await connect("editor", grants=api.VideoGrants(room_join=True, room="room", can_update_own_metadata=True))
    plain = await connect("plain")
    await editor.local.set_attributes({"state": "speaking"})
    changed, who = await plain.events.wait("participant_attributes_changed", lambda changed, p: p.identity == "editor")
    assert changed == {"state": "speaking"} and who.attributes == {"state": "speaking"}
    # The SDK call returns once the server answered (RequestResponse NOT_ALLOWED): nothing changed.
    await plain.local.set_attributes({"state": "hacked"})
    state = server.state().participant("room", "plain")
    assert state is not None and state.attributes == {}


async def test_cli_entry_point_serves_the_sdk() -> None:
    host = loopback_host()
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, LIVEKIT_API_SECRET=API_SECRET)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loopback",
        "--host",
        host,
        "--port",
        str(port),
        "--api-key",
        API_KEY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None
    output: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while b"DEVELOPMENT server on" not in b"".join(output):
                line = await proc.stdout.readline()
                assert line, b"".join(output).decode()
                output.append(line)
        token = (
            api.AccessToken(API_KEY, API_SECRET)
            .with_identity("cli-user")
            .with_grants(api.VideoGrants(room_join=True, room="cli"))
            .to_jwt()
        )
        room = rtc.Room()
        await room.connect(f"ws://{host}:{port}", token)
        assert room.local_participant.identity == "cli-user" and room.name == "cli"
        await room.disconnect()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        output.append(await proc.stdout.read())
        returncode = await asyncio.wait_for(proc.wait(), 30)
    text = b"".join(output).decode()
    assert returncode == 0, text
    assert API_SECRET not in text


async def _join_response(server: LoopbackServer, grants: api.VideoGrants) -> proto_rtc.JoinResponse:
    token = server.create_token("raw", "raw-room", grants=grants)
    ws_url = server.http_url.replace("http://", "ws://", 1)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{ws_url}/rtc?protocol=15", headers=headers) as ws:
        message = await ws.receive_bytes()
    response = proto_rtc.SignalResponse.FromString(message)
    assert response.WhichOneof("message") == "join"
    await server.wait_for(lambda s: not s.rooms)
    return response.join


async def test_join_response_grants_fast_publish_like_livekit_server(server: LoopbackServer) -> None:
    # livekit-server sets fast_publish for every participant that may publish: the SDK then negotiates a new
    # track at once instead of debouncing it (this is most of the time to a first avatar frame)
    publisher = await _join_response(server, api.VideoGrants(room_join=True, room="raw-room"))
    assert publisher.fast_publish
    assert not publisher.subscriber_primary
    watcher = await _join_response(server, api.VideoGrants(room_join=True, room="raw-room", can_publish=False))
    assert not watcher.fast_publish
