"""Fixtures for the loopback development server tests: the real livekit SDK on both ends.

Tests that need WebRTC skip unless run inside ``scripts/netns-run`` (see loopback.netns).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit import api, rtc

from loopback import LoopbackServer, loopback_host
from tests.loopback.loopback_helpers import API_KEY, API_SECRET, TIMEOUT, Client, ConnectFn


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    async with LoopbackServer(loopback_host(), 0, API_KEY, API_SECRET) as srv:
        yield srv


@pytest.fixture(params=["rtc_v1", "rtc_fallback"])
def signalling_path(request: pytest.FixtureRequest, server: LoopbackServer) -> str:
    """Run the test over the single peer connection (``/rtc/v1``) and the two-connection fallback (``/rtc``)."""
    server.rtc_v1 = request.param == "rtc_v1"
    return str(request.param)


@pytest.fixture
async def connect(server: LoopbackServer) -> AsyncIterator[ConnectFn]:
    """``await connect("alice", room="r", kind=..., attributes=..., grants=...)`` -> connected Client."""
    clients: list[Client] = []

    async def _connect(
        identity: str,
        room: str = "room",
        *,
        token: str | None = None,
        grants: api.VideoGrants | None = None,
        options: rtc.RoomOptions | None = None,
        **token_kwargs: Any,
    ) -> Client:
        if token is None:
            token = server.create_token(identity, room, grants=grants, **token_kwargs)
        client = Client(rtc.Room(), identity)
        clients.append(client)
        await asyncio.wait_for(client.room.connect(server.url, token, options or rtc.RoomOptions()), TIMEOUT)
        return client

    yield _connect
    for client in clients:
        if client.room.isconnected():
            await client.room.disconnect()
