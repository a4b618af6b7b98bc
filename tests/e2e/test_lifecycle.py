"""Every way a session ends makes the avatar leave the room and leaves nothing behind on the server: EndSession,
removal through RoomService, the idle timeout, the gateway's shutdown (`GatewayServer.stop`, its SIGTERM path), and
SIGTERM to the real `avatar-gateway serve` process. Each time the viewer sees participant_disconnected, the server
no longer has the avatar (loopback state and RoomService ListParticipants), and once the viewer leaves the room is
empty (loopback: the whole server is idle). Open audio streams get exactly one playback_finished per segment, then
SessionEnded."""

from __future__ import annotations

import asyncio
import signal

import pytest
from avatar.v1 import session_pb2
from livekit import api

from agent_client import GoAway, PlaybackFinished, PlaybackStarted, Session, SessionEnded
from tests.cli_process import GatewayProcess, clean_env
from tests.e2e.e2e_helpers import (
    LIGHT_VIDEO,
    TIMEOUT,
    EventLog,
    Harness,
    avatar_identity_for,
    chunked,
    new_session_id,
    speech_clip,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLI_CLIP_S = 2.0


async def test_end_session_mid_utterance_avatar_leaves(e2e: Harness) -> None:
    _, client = await e2e.gateway_client()
    session, viewer, avatar = await e2e.watched_session(client)

    stream = await client.stream_audio(session.name, sample_rate=16000).open()
    log = EventLog(stream.events())
    try:
        for chunk in chunked(speech_clip(4.0)):
            await stream.send(chunk)
        await log.wait_for(lambda e: isinstance(e, PlaybackStarted))

        ended = await client.end_session(session.name)
        events = await log.finish()
    finally:
        await log.aclose()
        stream.cancel()

    assert ended.state == session_pb2.SESSION_STATE_ENDED
    assert ended.end_reason == session_pb2.END_REASON_CLIENT_REQUEST
    # the open segment still gets its one (interrupted) finish, then the stream hears why it ends
    assert len(events) == 3, events
    started, finished, gone = events
    assert started == PlaybackStarted(1)
    assert isinstance(finished, PlaybackFinished) and finished.segment_id == 1 and finished.interrupted
    assert 0.0 <= finished.position < 4.0
    assert isinstance(gone, SessionEnded) and gone.reason == session_pb2.END_REASON_CLIENT_REQUEST
    await e2e.assert_avatar_left(viewer, avatar)
    assert (await client.get_session(session.name)).state == session_pb2.SESSION_STATE_ENDED
    await e2e.assert_nothing_left_after(viewer)


async def test_avatar_removed_through_room_service_ends_the_session(e2e: Harness) -> None:
    """What an agent-side avatar plugin's aclose() does (RoomService.RemoveParticipant): the session must notice,
    end as ROOM_DISCONNECTED and release everything."""
    gateway, client = await e2e.gateway_client()
    session, viewer, avatar = await e2e.watched_session(client)

    await e2e.lkapi.room.remove_participant(api.RoomParticipantIdentity(room=e2e.room, identity=avatar))
    await e2e.assert_avatar_left(viewer, avatar)
    last: Session | None = None
    async with asyncio.timeout(TIMEOUT):
        async for update in client.watch_session(session.name):
            last = update
    assert last is not None
    assert last.state == session_pb2.SESSION_STATE_FAILED
    assert last.end_reason == session_pb2.END_REASON_ROOM_DISCONNECTED
    assert not gateway.manager.active()
    await e2e.assert_nothing_left_after(viewer)


async def test_idle_timeout_avatar_leaves(e2e: Harness) -> None:
    _, client = await e2e.gateway_client()
    sid = new_session_id()
    avatar = avatar_identity_for(sid)
    viewer = await e2e.viewer(avatar)  # in the room first: it must see the avatar come and go
    session = await e2e.start_session(client, sid, idle_timeout=0.5, **LIGHT_VIDEO)

    seen: list[Session] = []
    async with asyncio.timeout(TIMEOUT):
        async for update in client.watch_session(session.name):
            seen.append(update)
    assert {s.state for s in seen} <= {session_pb2.SESSION_STATE_ACTIVE, session_pb2.SESSION_STATE_ENDING,
                                      session_pb2.SESSION_STATE_ENDED}, seen
    assert seen[-1].state == session_pb2.SESSION_STATE_ENDED
    assert seen[-1].end_reason == session_pb2.END_REASON_IDLE_TIMEOUT
    await e2e.assert_avatar_left(viewer, avatar)
    assert avatar in viewer.connected_identities
    await e2e.assert_nothing_left_after(viewer)


async def test_gateway_stop_mid_utterance_avatar_leaves(e2e: Harness) -> None:
    gateway, client = await e2e.gateway_client()
    session, viewer, avatar = await e2e.watched_session(client)

    stream = await client.stream_audio(session.name, sample_rate=16000).open()
    log = EventLog(stream.events())
    try:
        for chunk in chunked(speech_clip(4.0)):
            await stream.send(chunk)
        await stream.end_segment()
        await log.wait_for(lambda e: isinstance(e, PlaybackStarted))

        await gateway.stop()  # what SIGTERM runs; shutdown_grace_s=0: buffered speech is interrupted
        events = await log.finish()
    finally:
        await log.aclose()
        stream.cancel()

    # the agent hears about it in order: the gateway is going away (no grace), its segment finished (interrupted,
    # exactly once), the session ended
    assert [type(e) for e in events] == [PlaybackStarted, GoAway, PlaybackFinished, SessionEnded], events
    started, going, finished, ended = events
    assert started == PlaybackStarted(1)
    assert going == GoAway(0.0)
    assert isinstance(finished, PlaybackFinished) and finished.segment_id == 1 and finished.interrupted
    assert 0.0 <= finished.position < 4.0
    assert isinstance(ended, SessionEnded) and ended.reason == session_pb2.END_REASON_SERVER_SHUTDOWN
    assert not gateway.manager.active()
    await e2e.assert_avatar_left(viewer, avatar)
    await e2e.assert_nothing_left_after(viewer)


async def test_cli_sigterm_plays_out_then_avatar_leaves(e2e: Harness) -> None:
    """SIGTERM to `avatar-gateway serve` (default grace period): buffered speech plays out to its end, then the
    session ends, the avatar leaves, and the process exits 0."""
    env = clean_env(LIVEKIT_URL=e2e.target.url, LIVEKIT_API_KEY=e2e.target.api_key,
                    LIVEKIT_API_SECRET=e2e.target.api_secret)
    cli = await GatewayProcess.start("--listen", "127.0.0.1:0", env=env)
    proc = cli.proc
    try:
        port = int((await cli.wait_line(r"listening on port (\d+)")).group(1))
        client = e2e.client(port)
        sid = new_session_id()
        avatar = avatar_identity_for(sid)
        viewer = await e2e.viewer(avatar)
        session = await e2e.start_session(client, sid, **LIGHT_VIDEO)
        assert session.state == session_pb2.SESSION_STATE_ACTIVE
        await e2e.watch(viewer)

        stream = await client.stream_audio(session.name, sample_rate=16000).open()
        log = EventLog(stream.events())
        try:
            for chunk in chunked(speech_clip(CLI_CLIP_S)):
                await stream.send(chunk)
            await stream.end_segment()
            await log.wait_for(lambda e: isinstance(e, PlaybackStarted))
            proc.send_signal(signal.SIGTERM)
            events = await log.finish()
        finally:
            await log.aclose()
            stream.cancel()
        assert [type(e) for e in events] == [PlaybackStarted, GoAway, PlaybackFinished, SessionEnded], events
        _, going, finished, ended = events
        assert isinstance(going, GoAway) and going.time_left > 0
        assert isinstance(finished, PlaybackFinished) and finished.segment_id == 1 and not finished.interrupted
        assert finished.position == pytest.approx(CLI_CLIP_S, abs=1e-3)  # played out in full within the grace
        assert isinstance(ended, SessionEnded) and ended.reason == session_pb2.END_REASON_SERVER_SHUTDOWN

        await e2e.assert_avatar_left(viewer, avatar)
        code = await cli.wait()
        assert code == 0, f"avatar-gateway exited with {code}:\n{cli.output}"
        assert "Traceback" not in cli.output, cli.output
        assert e2e.target.api_secret not in cli.output, "the LiveKit secret appeared in the gateway's log"
        await e2e.assert_nothing_left_after(viewer)
    finally:
        await cli.aclose()
