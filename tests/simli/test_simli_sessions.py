"""Simli behind the gateway, through the REAL simli-ai client against the fake Simli: speech, interrupts, several
segments, errors with their gRPC status, Simli failing mid-session, EndSession while starting. Each segment gets
exactly one playback_finished with the position Simli's returned audio says was heard."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from agent_client import AvatarGatewayClient, GatewayError, PlaybackFinished, PlaybackStarted, SessionEnded
from fakes.simli import FakeSimli
from gateway.server import GatewayServer
from tests.conftest import chunks, speech
from tests.simli.conftest import BROKE_KEY, FACE, OTHER_FACE, WAIT, MakeGateway, simli_registry

pytestmark = pytest.mark.timeout(120)

ROOM = {"room_name": "simli-room", "agent_identity": "agent-1"}


async def events_until_finished(stream: object, count: int) -> list[object]:
    """Events until `count` playback_finished arrived."""
    seen: list[object] = []
    async with asyncio.timeout(WAIT):
        async for event in stream:  # type: ignore[attr-defined]
            seen.append(event)
            if sum(isinstance(e, PlaybackFinished) for e in seen) == count:
                return seen
    return seen


def finished(events: list[object]) -> dict[int, PlaybackFinished]:
    out: dict[int, PlaybackFinished] = {}
    for event in events:
        if isinstance(event, PlaybackFinished):
            assert event.segment_id not in out, f"segment {event.segment_id} finished twice"
            out[event.segment_id] = event
    return out


async def test_speech_reaches_simli_and_plays_out(simli_client: AvatarGatewayClient, fake_simli: FakeSimli) -> None:
    session = await simli_client.start_session("simli", **ROOM)  # type: ignore[arg-type]
    assert session.provider_audio_format.sample_rate_hz == 16000
    simli = await fake_simli.wait_session(0)
    assert simli.config["faceId"] == FACE, "SIMLI_FACE_ID is the default face"
    audio = speech(1.5)
    async with simli_client.stream_audio(session.name, sample_rate=16000) as stream:
        for chunk in chunks(audio):
            await stream.send(chunk)
        await stream.end_segment()
        events = await events_until_finished(stream, 1)
    assert isinstance(events[0], PlaybackStarted)
    [done] = finished(events).values()
    assert not done.interrupted
    assert done.position == pytest.approx(1.5, abs=1e-6), "every sample sent was heard, as Simli played it"
    assert audio.tobytes() in bytes(simli.received_pcm), "Simli got exactly the agent's 16 kHz audio"
    ended = await simli_client.end_session(session.name)
    assert ended.stats.segments_finished == 1
    await simli.wait_closed(WAIT)
    assert simli.stop_cause is not None and simli.stop_cause.name == "DONE"


async def test_speech_at_another_rate_is_resampled_to_16k(simli_client: AvatarGatewayClient,
                                                          fake_simli: FakeSimli) -> None:
    session = await simli_client.start_session("simli", **ROOM)  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    async with simli_client.stream_audio(session.name, sample_rate=48000, channels=2) as stream:
        for chunk in chunks(speech(1.0, 48000, channels=2), 48000, channels=2):
            await stream.send(chunk)
        await stream.end_segment()
        [done] = finished(await events_until_finished(stream, 1)).values()
    assert done.position == pytest.approx(1.0, abs=1e-3)
    assert simli.received_audio_bytes >= 2 * 16000, "one second of 16 kHz mono reached Simli"
    await simli_client.end_session(session.name)


async def test_several_segments_each_finish_once_in_order(simli_client: AvatarGatewayClient,
                                                          fake_simli: FakeSimli) -> None:
    session = await simli_client.start_session("simli", **ROOM)  # type: ignore[arg-type]
    lengths = [0.6, 0.0, 0.9, 0.4]
    async with simli_client.stream_audio(session.name, sample_rate=16000) as stream:
        for i, seconds in enumerate(lengths):
            for chunk in chunks(speech(seconds, seed=i + 1)):
                await stream.send(chunk)
            await stream.end_segment()
        events = await events_until_finished(stream, len(lengths))
    done = finished(events)
    assert sorted(done) == [1, 2, 3, 4]
    assert [e.segment_id for e in events if isinstance(e, PlaybackFinished)] == [1, 2, 3, 4]
    for segment, seconds in enumerate(lengths, start=1):
        assert not done[segment].interrupted
        assert done[segment].position == pytest.approx(seconds, abs=1e-6)
    await simli_client.end_session(session.name)


async def test_interrupt_skips_simli_and_reports_what_was_heard(simli_client: AvatarGatewayClient,
                                                                fake_simli: FakeSimli) -> None:
    session = await simli_client.start_session("simli", **ROOM)  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    skips_at_start = simli.skips  # the client skips once as it starts
    async with simli_client.stream_audio(session.name, sample_rate=16000) as stream:
        for chunk in chunks(speech(3.0)):
            await stream.send(chunk)
        async with asyncio.timeout(WAIT):
            async for event in stream:
                if isinstance(event, PlaybackStarted):
                    break
        await stream.clear()
        for chunk in chunks(speech(0.5, seed=2)):
            await stream.send(chunk)
        await stream.end_segment()
        events = await events_until_finished(stream, 2)
    done = finished(events)
    assert done[1].interrupted and 0 < done[1].position < 3.0
    assert not done[2].interrupted and done[2].position == pytest.approx(0.5, abs=1e-6)
    await fake_simli.wait_for(lambda: simli.skips == skips_at_start + 1, WAIT)
    await simli_client.end_session(session.name)


async def test_face_and_options_reach_simli(simli_client: AvatarGatewayClient, fake_simli: FakeSimli) -> None:
    options = {"max_session_length": "300", "max_idle_time": "20", "handle_silence": "true"}
    session = await simli_client.start_session("simli", avatar_id=OTHER_FACE, provider_options=options,
                                               **ROOM)  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    assert simli.config["faceId"] == OTHER_FACE
    assert (simli.config["maxSessionLength"], simli.config["maxIdleTime"], simli.config["handleSilence"]) == (
        300, 20, True)
    await simli_client.end_session(session.name)


@pytest.mark.parametrize(("options", "field"), [
    ({"max_idle_time": "1"}, "provider_options[max_idle_time]"),
    ({"handle_silence": "maybe"}, "provider_options[handle_silence]"),
    ({"handle_silence": "false"}, "provider_options[handle_silence]"),
    ({"streaming_width": "800", "streaming_height": "600"}, "provider_options[streaming_width]"),
    ({"background_id": "not-a-uuid"}, "provider_options[background_id]"),
    ({"colour": "blue"}, "provider_options[colour]"),
])
async def test_bad_options_are_refused_before_simli_is_called(simli_client: AvatarGatewayClient,
                                                              fake_simli: FakeSimli, options: dict[str, str],
                                                              field: str) -> None:
    with pytest.raises(GatewayError) as info:
        await simli_client.start_session("simli", provider_options=options, **ROOM)  # type: ignore[arg-type]
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.field_violations == [field]
    assert fake_simli.token_requests == [], "nothing reached Simli"


async def test_unknown_face_is_invalid_argument(simli_client: AvatarGatewayClient, fake_simli: FakeSimli) -> None:
    with pytest.raises(GatewayError) as info:
        await simli_client.start_session("simli", avatar_id="no-such-face", **ROOM)  # type: ignore[arg-type]
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FACE_ID")
    assert err.field_violations == ["avatar_id"]
    assert err.metadata["provider"] == "simli"


async def test_simli_http_errors_keep_their_class(fake_simli: FakeSimli, make_gateway: MakeGateway) -> None:
    """401 (the gateway's own key) is INTERNAL PROVIDER_AUTH_FAILED, never UNAUTHENTICATED; 402 is
    FAILED_PRECONDITION; a 503 outage is UNAVAILABLE with RetryInfo after the gateway's own retries (P2P every
    time); none of Simli's text or the key leaks."""
    wrong = await make_gateway(registry=simli_registry(fake_simli, key="not-the-key"))
    broke = await make_gateway(registry=simli_registry(fake_simli, key=BROKE_KEY))
    ok = await make_gateway(registry=simli_registry(fake_simli))

    async def start_on(server: GatewayServer) -> GatewayError:
        async with AvatarGatewayClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
            with pytest.raises(GatewayError) as info:
                await client.start_session("simli", **ROOM)  # type: ignore[arg-type]
            return info.value

    auth = await start_on(wrong)
    assert (auth.code, auth.reason, auth.metadata["provider"]) == (grpc.StatusCode.INTERNAL,
                                                                   "PROVIDER_AUTH_FAILED", "simli")
    assert "not-the-key" not in repr(auth) and "not-the-key" not in auth.message
    billing = await start_on(broke)
    assert (billing.code, billing.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_BILLING")
    fake_simli.fail_token(503, "upstream down", times=3)
    outage = await start_on(ok)
    assert (outage.code, outage.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert outage.retry_after is not None and outage.retry_after > 0
    statuses = [r.status for r in fake_simli.token_requests]
    assert statuses[-3:] == [503, 503, 503], "the gateway retried the outage itself"
    fake_simli.fail_token(503, "blip", times=1)
    async with AvatarGatewayClient(f"127.0.0.1:{ok.port}", timeout=WAIT) as client:
        session = await client.start_session("simli", **ROOM)  # type: ignore[arg-type]
        assert session.state == 2, "one 503, then a retry that works"
        await client.end_session(session.name)
    for server in (wrong, broke, ok):
        await server.stop(0.0)
    await fake_simli.wait_open_sessions(0, timeout=WAIT)


async def test_simli_dying_mid_session_fails_the_session_and_finishes_the_segment(
        simli_client: AvatarGatewayClient, fake_simli: FakeSimli) -> None:
    session = await simli_client.start_session("simli", **ROOM)  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    events: list[object] = []
    async with simli_client.stream_audio(session.name, sample_rate=16000) as stream:
        for chunk in chunks(speech(4.0)):
            await stream.send(chunk)
        async with asyncio.timeout(WAIT):
            async for event in stream:
                events.append(event)
                if isinstance(event, PlaybackStarted):
                    await simli.kill_webrtc()
                if isinstance(event, SessionEnded):
                    break
    done = finished(events)
    assert list(done) == [1] and done[1].interrupted and done[1].position < 4.0
    got = await simli_client.get_session(session.name)
    assert got.state == 5 and got.end_reason == 4, "FAILED, PROVIDER_ERROR"
    assert "SIMLI_CONNECTION_LOST" in got.end_detail
    await simli.wait_closed(WAIT)


async def test_simli_error_message_mid_session(simli_client: AvatarGatewayClient, fake_simli: FakeSimli) -> None:
    session = await simli_client.start_session("simli", **ROOM)  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    updates = simli_client.watch_session(session.name)
    async with asyncio.timeout(WAIT):
        assert (await anext(updates)).state == 2
        await simli.send_error("render node lost")
        async for update in updates:
            if update.state == 5:
                break
    assert "SIMLI_SESSION_ERROR" in update.end_detail and "render node lost" in update.end_detail


async def test_end_session_while_simli_is_starting(simli_client: AvatarGatewayClient, fake_simli: FakeSimli) -> None:
    fake_simli.start_delay = 30.0  # START would come far later than the test lasts
    starting = asyncio.create_task(simli_client.start_session("simli", session_id="slow", **ROOM))  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    ended = await simli_client.end_session("sessions/slow")
    assert ended.state == 4
    with pytest.raises(GatewayError) as info:
        await starting
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.UNAVAILABLE, "ENDED_WHILE_STARTING")
    await simli.wait_closed(WAIT)


async def test_republished_audio_is_simli_s_not_the_agent_s(simli_gateway: GatewayServer,
                                                             simli_client: AvatarGatewayClient,
                                                             fake_simli: FakeSimli) -> None:
    """What the gateway plays is Simli's returned audio: an agent segment of pure silence is heard as silence,
    and the session's frames keep flowing while Simli idles (handle_silence)."""
    session = await simli_client.start_session("simli", **ROOM)  # type: ignore[arg-type]
    async with simli_client.stream_audio(session.name, sample_rate=16000) as stream:
        await stream.send(np.zeros(8000, dtype=np.int16).tobytes())
        await stream.end_segment()
        [done] = finished(await events_until_finished(stream, 1)).values()
    assert done.position == pytest.approx(0.5, abs=1e-6)
    got = await simli_client.get_session(session.name)
    assert got.stats.video_frames > 0 and got.stats.samples_played > 0
    await simli_client.end_session(session.name)


async def test_simli_session_is_renewed_before_its_cap_without_leaving(simli_client: AvatarGatewayClient,
                                                                        fake_simli: FakeSimli) -> None:
    """max_session_length 10 s: a second Simli session starts ahead of the cap and is swapped in at a quiet moment;
    the first is stopped (DONE, never MAX), the gateway session stays ACTIVE and speech goes to the new one."""
    session = await simli_client.start_session("simli", provider_options={"max_session_length": "10"},
                                               **ROOM)  # type: ignore[arg-type]
    first = await fake_simli.wait_session(0)
    second = await fake_simli.wait_session(1, timeout=WAIT)
    await first.wait_closed(WAIT)
    assert first.stop_cause is not None and first.stop_cause.name == "DONE", "stopped by the gateway, not by the cap"
    assert second.is_open
    assert (await simli_client.get_session(session.name)).state == 2
    audio = speech(0.5)
    async with simli_client.stream_audio(session.name, sample_rate=16000) as stream:
        for chunk in chunks(audio):
            await stream.send(chunk)
        await stream.end_segment()
        [done] = finished(await events_until_finished(stream, 1)).values()
    assert done.position == pytest.approx(0.5, abs=1e-6) and not done.interrupted
    assert audio.tobytes() in bytes(second.received_pcm)
    await simli_client.end_session(session.name)


async def test_idle_simli_is_kept_alive_while_the_stream_is_open(simli_client: AvatarGatewayClient,
                                                                 fake_simli: FakeSimli) -> None:
    """max_idle_time 5 s: with the agent's stream open and silent, the gateway keeps Simli's idle timer from
    firing; once the stream closes Simli's idle timer ends the session, which ends IDLE_TIMEOUT (not FAILED)."""
    idle = 5
    session = await simli_client.start_session("simli", provider_options={"max_idle_time": str(idle)},
                                               **ROOM)  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    async with simli_client.stream_audio(session.name, sample_rate=16000):
        before = simli.audio_messages
        await fake_simli.wait_for(lambda: simli.audio_messages >= before + 4, WAIT)
        assert simli.is_open, "four keep-alives, max_idle_time / 3 apart: Simli's idle timer never ran out"
    updates = simli_client.watch_session(session.name)
    async with asyncio.timeout(WAIT):
        async for update in updates:
            if update.state in (4, 5):
                break
    assert (update.state, update.end_reason) == (4, 2), "ENDED, IDLE_TIMEOUT"
    assert simli.stop_cause is not None and simli.stop_cause.name == "IDLE"


@pytest.mark.parametrize(("limit", "reason"), [({"idle_timeout": 1.0}, 2), ({"max_duration": 2.0}, 3)],
                         ids=["idle-timeout", "max-duration"])
async def test_the_gateway_s_own_timers_stop_simli(simli_client: AvatarGatewayClient, fake_simli: FakeSimli,
                                                   limit: dict[str, float], reason: int) -> None:
    session = await simli_client.start_session("simli", **ROOM, **limit)  # type: ignore[arg-type]
    simli = await fake_simli.wait_session(0)
    async with asyncio.timeout(WAIT):
        async for update in simli_client.watch_session(session.name):
            if update.state in (4, 5):
                break
    assert (update.state, update.end_reason) == (4, reason)
    await simli.wait_closed(WAIT)
    assert simli.stop_cause is not None and simli.stop_cause.name == "DONE"


async def test_a_renewal_waiting_for_a_quiet_moment_keeps_the_new_session_alive(
        simli_client: AvatarGatewayClient, fake_simli: FakeSimli) -> None:
    """max_session_length 20 s, max_idle_time 5 s, and speech queued past the swap deadline: the second Simli
    session waits 7.5 s for a quiet moment (longer than Simli's idle time) and is kept alive meanwhile; at the
    deadline it is swapped in, the speech still queued is cut (its segment finishes once, interrupted) and the
    gateway session goes on."""
    options = {"max_session_length": "20", "max_idle_time": "5"}
    session = await simli_client.start_session("simli", provider_options=options, **ROOM)  # type: ignore[arg-type]
    first = await fake_simli.wait_session(0)
    async with simli_client.stream_audio(session.name, sample_rate=16000) as stream:
        for chunk in chunks(speech(22.0)):
            await stream.send(chunk)
        await stream.end_segment()
        events = await events_until_finished(stream, 1)
        second = await fake_simli.wait_session(1, timeout=WAIT)
        [done] = finished(events).values()
        assert done.interrupted and 10.0 < done.position < 22.0, done
        assert second.is_open and second.stop_cause is None, "the waiting session was kept alive"
        await first.wait_closed(WAIT)
        assert first.stop_cause is not None and first.stop_cause.name == "DONE"
        audio = speech(0.4, seed=3)
        for chunk in chunks(audio):
            await stream.send(chunk)
        await stream.end_segment()
        [after] = finished(await events_until_finished(stream, 1)).values()
    assert not after.interrupted and after.position == pytest.approx(0.4, abs=1e-6)
    assert (await simli_client.get_session(session.name)).state == 2
    await simli_client.end_session(session.name)
