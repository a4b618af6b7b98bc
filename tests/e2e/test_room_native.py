"""Room-native vendors behind the gateway, end to end: the fake vendors' workers (livekit-agents' own
DataStreamAudioReceiver + AvatarRunner) join the loopback room with the token the gateway minted, take the
agent's speech from the gateway's relay participant, and their playback RPCs become the agent's events."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from avatar.v1 import session_pb2
from livekit import api, rtc
from livekit.agents.voice.avatar import DataStreamAudioOutput

from agent_client import PlaybackFinished, PlaybackStarted, StreamWarning
from agent_client.errors import GatewayError
from agent_client.livekit.testing import tone
from fakes.room_native import FakeVendors
from providers.registry import build_registry
from providers.room_native.vendors import VENDORS
from tests.e2e.e2e_helpers import (
    AGENT,
    TIMEOUT,
    EventLog,
    Harness,
    avatar_identity_for,
    chunked,
    new_session_id,
    speech_clip,
)
from tests.e2e.room_native_helpers import KEY, started, vendor_registry

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIP_S = 1.0

@pytest.mark.parametrize("vendor", [v.name for v in VENDORS])
async def test_speech_reaches_the_vendor_and_its_finish_reaches_the_agent(e2e: Harness, vendors: FakeVendors,
                                                                         vendor: str) -> None:
    client, name, avatar = await started(e2e, vendors, vendor)
    (session,) = vendors.running()
    assert session.vendor == vendor and session.body["_avatar"] in ("face-1", "")

    async with client.stream_audio(name, sample_rate=16000) as stream:
        log = EventLog(stream.events())
        try:
            for chunk in chunked(speech_clip(CLIP_S)):
                await stream.send(chunk)
            await stream.end_segment()
            finished = await log.wait_for(lambda e: isinstance(e, PlaybackFinished))
        finally:
            await log.aclose()
    assert PlaybackStarted(1) in log.events
    assert isinstance(finished, PlaybackFinished) and finished.segment_id == 1 and not finished.interrupted
    # the vendor's own position: all of the clip played (at the vendor's rate, in its 100 ms frames)
    assert CLIP_S - 0.1 <= finished.position <= CLIP_S + 0.1
    stats = (await client.get_session(name)).stats  # what the vendor played, not what was sent to it
    rate = next(v.sample_rate for v in VENDORS if v.name == vendor)
    assert stats.samples_played == round(finished.position * rate)

    await client.end_session(name)
    await vendors.wait_until(lambda f: not f.running())
    stops = {"tavus": 1, "runway": 1}.get(vendor, 0)  # the vendors with a stop call got it, once
    assert session.stop_calls == stops
    assert e2e.lk is not None
    await e2e.lk.wait_for(lambda s: e2e.room not in s.rooms or avatar not in s.rooms[e2e.room].participants,
                          TIMEOUT)


async def test_an_interrupt_finishes_the_segment_with_the_vendor_s_position(e2e: Harness,
                                                                            vendors: FakeVendors) -> None:
    client, name, _ = await started(e2e, vendors, "tavus")
    clip = speech_clip(6.0)
    stream = await client.stream_audio(name, sample_rate=16000).open()
    log = EventLog(stream.events())
    try:
        for chunk in chunked(clip):
            await stream.send(chunk)
        await log.wait_for(lambda e: isinstance(e, PlaybackStarted))
        await stream.clear()
        finished = await log.wait_for(lambda e: isinstance(e, PlaybackFinished))
        await stream.close()
        events = await log.finish()
    finally:
        await log.aclose()
        stream.cancel()
    assert isinstance(finished, PlaybackFinished) and finished.interrupted
    assert 0.0 <= finished.position < 6.0
    assert [e for e in events if isinstance(e, PlaybackFinished)] == [finished]
    await client.end_session(name)


async def test_a_vendor_that_never_finishes_still_gets_each_segment_finished_once(e2e: Harness,
                                                                                   vendors: FakeVendors) -> None:
    vendors.forget_ends = True
    client, name, _ = await started(e2e, vendors, "bey")
    async with client.stream_audio(name, sample_rate=16000) as stream:
        log = EventLog(stream.events())
        try:
            for _segment in range(2):
                for chunk in chunked(speech_clip(0.5)):
                    await stream.send(chunk)
                await stream.end_segment()
            await stream.end_segment()  # an empty third segment: never streamed, finished in its turn
            await log.wait_for(lambda e: isinstance(e, PlaybackFinished) and e.segment_id == 3)
        finally:
            await log.aclose()
    finishes = [e for e in log.events if isinstance(e, PlaybackFinished)]
    assert [f.segment_id for f in finishes] == [1, 2, 3]
    assert not any(f.interrupted for f in finishes)
    await client.end_session(name)


async def test_vendor_errors_keep_their_class_and_start_nothing(e2e: Harness, vendors: FakeVendors) -> None:
    _, client = await e2e.gateway_client(vendor_registry(vendors))
    vendors.fail_next["tavus"] = (400, {"message": "User has reached maximum concurrent conversations"})
    with pytest.raises(GatewayError) as caught:
        await e2e.start_session(client, new_session_id(), provider="tavus", avatar_id="face-1")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and caught.value.retry_after is not None

    vendors.fail_next["anam"] = (422, {"message": "unknown avatarId"})
    with pytest.raises(GatewayError) as caught:
        await e2e.start_session(client, new_session_id(), provider="anam", avatar_id="nope")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown avatarId" in caught.value.message

    wrong = build_registry({"DID_API_KEY": "not-the-key", "DID_API_URL": vendors.url})
    _, other = await e2e.gateway_client(wrong)
    with pytest.raises(GatewayError) as caught:
        await e2e.start_session(other, new_session_id(), provider="did", avatar_id="agent-1")
    assert caught.value.code == grpc.StatusCode.INTERNAL and caught.value.reason == "PROVIDER_AUTH_FAILED"
    assert "not-the-key" not in str(caught.value)
    assert vendors.sessions == {}


async def test_a_vendor_playing_another_agent_is_refused_and_removed(e2e: Harness, vendors: FakeVendors) -> None:
    """A first-agent vendor takes the first agent participant it finds: with the agent in the room that may be the
    agent, not the relay, and the avatar would stand silent. The gateway finds out (the worker rejects the relay's
    clear), refuses the session and stops the vendor; a vendor told whom to listen to (Runway) works there."""
    agent = rtc.Room()
    token = (api.AccessToken(e2e.target.api_key, e2e.target.api_secret).with_identity("the-agent")
             .with_kind("agent").with_grants(api.VideoGrants(room_join=True, room=e2e.room)).to_jwt())
    await agent.connect(e2e.target.url, token)
    try:
        _, client = await e2e.gateway_client(vendor_registry(vendors))
        session_id = new_session_id()
        viewer = await e2e.viewer(avatar_identity_for(session_id, "tavus"))
        vendors.listen_to = "the-agent"
        with pytest.raises(GatewayError) as caught:
            await e2e.start_session(client, session_id, provider="tavus", avatar_id="face-1")
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.reason == "VENDOR_LISTENS_ELSEWHERE"
        await vendors.wait_until(lambda f: not f.running())
        (refused,) = vendors.sessions.values()
        assert refused.stop_calls == 1 and not refused.worker.kicked
        await viewer.aclose()

        vendors.listen_to = None
        client2, name, _ = await started(e2e, vendors, "runway")
        async with client2.stream_audio(name, sample_rate=16000) as stream:
            log = EventLog(stream.events())
            try:
                for chunk in chunked(speech_clip(0.5)):
                    await stream.send(chunk)
                await stream.end_segment()
                finished = await log.wait_for(lambda e: isinstance(e, PlaybackFinished))
            finally:
                await log.aclose()
        assert isinstance(finished, PlaybackFinished) and not finished.interrupted
        await client2.end_session(name)
    finally:
        await agent.disconnect()


async def test_when_the_vendor_leaves_mid_session_the_agent_s_voice_goes_on_alone(e2e: Harness,
                                                                                 vendors: FakeVendors) -> None:
    """The worker is removed by someone else mid-utterance: segments it was given finish interrupted, the one
    still being spoken goes on as the agent's voice on the relay's own microphone track, the agent is told, and
    the session stays up."""
    client, name, avatar = await started(e2e, vendors, "lemonslice")
    voice = await e2e.viewer(f"{avatar}-relay", identity="voice-viewer")
    stream = await client.stream_audio(name, sample_rate=16000).open()
    log = EventLog(stream.events())
    try:
        for chunk in chunked(speech_clip(0.5)):
            await stream.send(chunk)
        await stream.end_segment()  # segment 1: all of it given to the vendor
        for chunk in chunked(speech_clip(1.0)):
            await stream.send(chunk)  # segment 2: still open
        await log.wait_for(lambda e: isinstance(e, PlaybackStarted))
        await e2e.lkapi.room.remove_participant(api.RoomParticipantIdentity(room=e2e.room, identity=avatar))
        warning = await log.wait_for(lambda e: isinstance(e, StreamWarning) and e.reason == "PROVIDER_LOST")
        assert isinstance(warning, StreamWarning) and "lemonslice" in warning.message
        heard_from = len(voice.rx.audio)
        for chunk in chunked(speech_clip(1.0)):
            await stream.send(chunk)
        await stream.end_segment()
        second = await log.wait_for(lambda e: isinstance(e, PlaybackFinished) and e.segment_id == 2)
        await voice.wait_until(lambda: sum(lv >= 0.3 for _, lv in voice.rx.audio[heard_from:]) >= 20)
    finally:
        await log.aclose()
        stream.cancel()
    finishes = [e for e in log.events if isinstance(e, PlaybackFinished)]
    assert [f.segment_id for f in finishes] == [1, 2]  # each once, in order
    assert isinstance(second, PlaybackFinished) and not second.interrupted and second.position >= 1.0
    session = await client.get_session(name)
    assert session.state == session_pb2.SESSION_STATE_ACTIVE
    (gone,) = vendors.sessions.values()
    assert gone.worker.kicked
    await client.end_session(name)


async def test_when_the_vendor_leaves_a_direct_session_it_ends(e2e: Harness, vendors: FakeVendors) -> None:
    agent = rtc.Room()
    await agent.connect(e2e.target.url, agent_token(e2e, AGENT))
    try:
        _, client = await e2e.gateway_client(vendor_registry(vendors))
        session_id = new_session_id()
        avatar = avatar_identity_for(session_id, "bey")
        viewer = await e2e.viewer(avatar)
        session = await e2e.start_session(client, session_id, provider="bey", avatar_id="b",
                                          audio_transport=session_pb2.AUDIO_TRANSPORT_ROOM)
        await e2e.watch(viewer)
        await e2e.lkapi.room.remove_participant(api.RoomParticipantIdentity(room=e2e.room, identity=avatar))
        async for seen in client.watch_session(session.name):
            last = seen
        assert last.end_reason == session_pb2.END_REASON_PROVIDER_ERROR and "PROVIDER_LEFT" in last.end_detail
    finally:
        await agent.disconnect()


async def test_the_worker_token_is_tight_and_carries_no_vendor_secret(e2e: Harness, vendors: FakeVendors) -> None:
    client, name, _avatar = await started(e2e, vendors, "tavus")
    (session,) = vendors.running()
    assert KEY not in str(session.body)
    await client.end_session(name)
    listed = await e2e.participants()
    assert not any(KEY in str(p.attributes) or KEY in p.metadata for p in listed.values())


async def test_vendors_without_a_key_are_listed_disabled_with_the_reason(e2e: Harness) -> None:
    _, client = await e2e.gateway_client(build_registry({}))
    listed = {p.name: p for p in await client.list_providers()}
    for vendor in VENDORS:
        assert not listed[vendor.name].enabled
        assert listed[vendor.name].disabled_reason == f"{vendor.key_env} is not set"


async def test_a_vendor_s_cap_is_listed_and_bounds_its_sessions(e2e: Harness, vendors: FakeVendors) -> None:
    client, name, _ = await started(e2e, vendors, "runway")
    listed = {p.name: p for p in await client.list_providers()}
    assert listed["runway"].max_session_duration.seconds == 290  # ahead of Runway's own silent ~300 s
    session = await client.get_session(name)
    assert session.max_duration.seconds == 290
    await client.end_session(name)


async def test_the_vendor_time_used_is_counted_until_the_vendor_stops(e2e: Harness, vendors: FakeVendors) -> None:
    client, name, _ = await started(e2e, vendors, "anam")
    running = (await client.get_session(name)).stats.provider_time.ToNanoseconds()
    assert running > 0
    await client.end_session(name)
    ended = (await client.get_session(name)).stats.provider_time.ToNanoseconds()
    assert ended > running
    assert (await client.get_session(name)).stats.provider_time.ToNanoseconds() == ended  # stopped: no longer counts
    await client.end_session(name)


@pytest.mark.parametrize("vendor", ["tavus", "bey"])  # with a stop call, and without one
async def test_a_session_ended_while_the_vendor_is_asked_still_stops_the_vendor(e2e: Harness, vendors: FakeVendors,
                                                                                vendor: str) -> None:
    _, client = await e2e.gateway_client(vendor_registry(vendors))
    vendors.hold_starts = asyncio.Event()
    session_id = new_session_id()
    start = asyncio.ensure_future(e2e.start_session(client, session_id, provider=vendor, avatar_id="face-1"))
    await vendors.wait_until(lambda f: f.starts_received == 1)
    name = f"sessions/{session_id}"
    ended = asyncio.ensure_future(client.end_session(name))
    async for seen in client.watch_session(name):  # the start is given up before the vendor answers
        if seen.state != session_pb2.SESSION_STATE_STARTING:
            break
    vendors.hold_starts.set()
    await ended
    with pytest.raises(GatewayError):
        await start
    (session,) = vendors.sessions.values()  # the vendor made it anyway: it is stopped, its worker gone
    await vendors.wait_until(lambda f: not f.running())
    assert session.stop_calls == (1 if vendor == "tavus" else 0)
    assert session.worker.kicked == (vendor == "bey")


def agent_token(e2e: Harness, identity: str) -> str:
    return (api.AccessToken(e2e.target.api_key, e2e.target.api_secret).with_identity(identity).with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=e2e.room)).to_jwt())


async def test_an_agent_in_the_room_streams_to_the_vendor_itself_under_the_room_transport(
        e2e: Harness, vendors: FakeVendors) -> None:
    """Direct mode: the agent's own DataStreamAudioOutput speaks to the vendor's worker; the gateway, a hidden
    watcher, only starts, watches and stops the vendor. The worker can only find the agent."""
    agent = rtc.Room()
    await agent.connect(e2e.target.url, agent_token(e2e, AGENT))
    try:
        _, client = await e2e.gateway_client(vendor_registry(vendors))
        session_id = new_session_id()
        viewer = await e2e.viewer(avatar_identity_for(session_id, "tavus"))
        session = await e2e.start_session(client, session_id, provider="tavus", avatar_id="face-1",
                                          audio_transport=session_pb2.AUDIO_TRANSPORT_ROOM)
        await e2e.watch(viewer)
        hidden = [i for i in agent.remote_participants if i.endswith("-relay")]
        assert hidden == []  # the gateway's watcher is invisible to the room
        rate = session.provider_audio_format.sample_rate_hz  # the vendor's rate, as a stock plugin passes it
        assert rate == 24000
        output = DataStreamAudioOutput(agent, destination_identity=session.avatar_identity, sample_rate=rate,
                                       wait_remote_track=rtc.TrackKind.KIND_VIDEO)
        clip = tone(0.6, rate)
        for i in range(0, len(clip), rate // 50 * 2):  # 20 ms frames
            chunk = clip[i:i + rate // 50 * 2]
            await output.capture_frame(rtc.AudioFrame(chunk, rate, 1, len(chunk) // 2))
        output.flush()
        async with asyncio.timeout(TIMEOUT):
            finished = await output.wait_for_playout()
        assert not finished.interrupted and finished.playback_position == pytest.approx(0.6, abs=0.1)

        await client.end_session(session.name)
        await vendors.wait_until(lambda f: not f.running())
        (vendor_session,) = vendors.sessions.values()
        assert vendor_session.stop_calls == 1
    finally:
        await agent.disconnect()


async def test_relaying_to_a_first_agent_vendor_with_the_agent_in_the_room_is_refused_before_the_vendor_is_asked(
        e2e: Harness, vendors: FakeVendors) -> None:
    agent = rtc.Room()
    await agent.connect(e2e.target.url, agent_token(e2e, AGENT))
    try:
        _, client = await e2e.gateway_client(vendor_registry(vendors))
        with pytest.raises(GatewayError) as caught:
            await e2e.start_session(client, new_session_id(), provider="did", avatar_id="agent-1")
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION and caught.value.reason == "AGENT_IN_ROOM"
        assert "AUDIO_TRANSPORT_ROOM" in caught.value.message
        assert vendors.sessions == {}
    finally:
        await agent.disconnect()
