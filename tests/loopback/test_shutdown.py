"""Leaving and closing leave nothing behind: no room, peer connection, WebSocket or task."""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.protocol import models

from loopback import LoopbackServer, loopback_host
from tests.loopback.loopback_helpers import (
    API_KEY,
    API_SECRET,
    HEIGHT,
    TIMEOUT,
    WIDTH,
    Client,
    feed_tone,
    feed_video,
    requires_netns,
)

pytestmark = requires_netns

_SERVER_SIDE_PACKAGES = ("/loopback/", "/aiortc/", "/aioice/", "/aiohttp/web")


def _pending_server_side_tasks() -> dict[asyncio.Task[object], str]:
    """Pending tasks whose coroutine comes from the server or its aiortc/aioice/aiohttp-server code."""
    current = asyncio.current_task()
    out = {}
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "/tests/" not in filename and any(marker in filename for marker in _SERVER_SIDE_PACKAGES):
            out[task] = f"{task.get_name()} {filename} {code.co_qualname if code is not None else ''}"
    return out


async def _server_side_tasks() -> list[str]:
    """The server-side tasks that do not end by themselves.

    The server waits for the aiortc and aioice tasks it can name; one of their other internal tasks may still need a
    loop iteration after close() returned, so pending tasks are waited for, and one still pending after TIMEOUT is a
    leak (as aioice's consent checks were, started by a connect() that outlived its connection's close()).
    """
    pending = _pending_server_side_tasks()
    if pending:
        await asyncio.wait(pending, timeout=TIMEOUT)
    return [name for task, name in pending.items() if not task.done()]


async def _publishing_client(srv: LoopbackServer, identity: str) -> tuple[Client, list[asyncio.Task[None]]]:
    client = Client(rtc.Room(), identity)
    await asyncio.wait_for(client.room.connect(srv.url, srv.create_token(identity, "room")), TIMEOUT)
    audio_src = rtc.AudioSource(48000, 1)
    video_src = rtc.VideoSource(WIDTH, HEIGHT)
    feeders = [asyncio.ensure_future(feed_tone(audio_src)), asyncio.ensure_future(feed_video(video_src))]
    await client.local.publish_track(
        rtc.LocalAudioTrack.create_audio_track("mic", audio_src),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )
    await client.local.publish_track(
        rtc.LocalVideoTrack.create_video_track("cam", video_src),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA),
    )
    return client, feeders


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_everyone_leaves_then_close_leaves_nothing() -> None:
    srv = LoopbackServer(loopback_host(), 0, API_KEY, API_SECRET)
    await srv.start()
    a, fa = await _publishing_client(srv, "a")
    b, fb = await _publishing_client(srv, "b")
    state = await srv.wait_for(lambda s: all(len(p.subscriptions) == 2 for p in s.rooms["room"].participants.values()))
    assert state.peer_connections == 2
    await _stop(fa + fb)
    await a.room.disconnect()
    await b.room.disconnect()
    state = await srv.wait_for(lambda s: s.idle)
    assert state.rooms == {} and state.peer_connections == 0 and state.tasks == ()
    await srv.close()
    assert srv.state().idle
    assert await _server_side_tasks() == []


async def test_close_disconnects_everyone() -> None:
    srv = LoopbackServer(loopback_host(), 0, API_KEY, API_SECRET, rtc_v1=False)
    await srv.start()
    a, fa = await _publishing_client(srv, "a")
    b, fb = await _publishing_client(srv, "b")
    await srv.wait_for(lambda s: all(len(p.subscriptions) == 2 for p in s.rooms["room"].participants.values()))
    try:
        await srv.close()
        (reason_a,) = await a.events.wait("disconnected")
        (reason_b,) = await b.events.wait("disconnected")
        assert reason_a == reason_b == models.DisconnectReason.SERVER_SHUTDOWN
        assert srv.state().idle
        assert await _server_side_tasks() == []
    finally:
        await _stop(fa + fb)
        for client in (a, b):
            if client.room.isconnected():
                await client.room.disconnect()
