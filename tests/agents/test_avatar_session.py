"""A real livekit-agents AgentSession in a real room, speaking through `agent_client.livekit.AvatarSession`: the
gateway's mock avatar joins the room, a viewer watches it, and the agent's speech handles resolve from the
gateway's playback events (heard positions), on every path.

The agent is its own participant of the test's room (an rtc.Room with its own token); its TTS voices each word as
a fixed stretch of tone (agent_client/livekit/testing.py), so every utterance's length is known exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit import api, rtc
from livekit.agents import Agent, AgentSession, JobContext, llm
from livekit.agents.testing import fake_job_context
from livekit.agents.voice.io import PlaybackFinishedEvent
from livekit.agents.voice.room_io import RoomOptions

from agent_client.livekit import AvatarJoinError, AvatarSession, AvatarStreamError
from agent_client.livekit.testing import FixedLLM, ToneTTS, utterance_seconds
from gateway.server import GatewayServer
from tests.agents.tcp_proxy import TcpProxy
from tests.cli_process import GatewayProcess, clean_env
from tests.e2e.e2e_helpers import (
    LIGHT_VIDEO,
    TIMEOUT,
    Harness,
    ObservedViewer,
    avatar_identity_for,
    new_session_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

LOUD = 0.5  # viewer audio level of the tone (viewer.sync.envelope_level)
HEARD_FRACTION = 0.7  # of an utterance's 10 ms chunks the viewer must hear loud (its jitter buffer stretches time)
POSITION_TOL = 1e-3  # seconds; the gateway reports heard samples, the TTS made whole samples
# livekit-agents' AudioEmitter ends a synthesis with 10 ms silence markers: the agent sends a little more than the
# tone, and what it sends is what plays
MARKERS_MAX_S = 0.05


REPLY = "this is the fixed answer of the test model"


def words(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


@dataclasses.dataclass
class World:
    harness: Harness
    gateway: GatewayServer | None
    viewer: ObservedViewer
    room: rtc.Room
    session: AgentSession[Any]
    avatar: AvatarSession
    avatar_identity: str
    job: JobContext | None
    finished: list[PlaybackFinishedEvent] = dataclasses.field(default_factory=list)
    sent: list[float] = dataclasses.field(default_factory=list)  # seconds the agent gave each finished segment
    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def loud_chunks(self, after: int) -> int:
        return sum(level >= LOUD for _, level in self.viewer.rx.audio[after:])

    async def heard(self, seconds: float, after: int) -> None:
        """Until the viewer has heard `seconds` of loud tone after audio chunk `after`."""
        await self.viewer.wait_until(lambda: self.loud_chunks(after) >= HEARD_FRACTION * seconds / 0.01)

    async def say(self, text: str) -> PlaybackFinishedEvent | None:
        """session.say(text) until it returns; the sink's last finish (None if the text made no segment)."""
        before = len(self.finished)
        async with asyncio.timeout(TIMEOUT):
            await self.session.say(text)
        return self.finished[-1] if len(self.finished) > before else None


def agent_token(harness: Harness, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=harness.room, agent=True)
    return (api.AccessToken(harness.target.api_key, harness.target.api_secret)
            .with_identity(identity).with_kind("agent").with_grants(grants).to_jwt())


@contextlib.asynccontextmanager
async def agent_world(e2e: Harness, *, embedded: bool = False, headless: bool = False,
                      job: bool = False, proxy: TcpProxy | None = None, gateway_target: str | None = None,
                      **avatar_args: Any) -> AsyncIterator[World]:
    """Gateway (or embedded), viewer, the agent's room, AgentSession with the avatar, started in that order."""
    gateway: GatewayServer | None = None
    if gateway_target is not None:  # a gateway the test runs itself (a separate process)
        target = gateway_target
    elif embedded:
        target = "embedded"
        avatar_args.update(livekit_url=e2e.target.url, livekit_api_key=e2e.target.api_key,
                           livekit_api_secret=e2e.target.api_secret)
    else:
        gateway = await e2e.start_gateway(headless=headless)
        target = f"127.0.0.1:{gateway.port}"
        if proxy is not None:  # the plugin reaches the gateway through a proxy whose connections the test cuts
            await proxy.start(gateway.port)
            target = proxy.target
    session_id = new_session_id()
    identity = avatar_identity_for(session_id)
    viewer = await e2e.viewer(identity)
    room = rtc.Room()
    session: AgentSession[Any] = AgentSession(
        tts=ToneTTS(), llm=FixedLLM(REPLY), turn_handling={"interruption": {"resume_false_interruption": False}})
    avatar = AvatarSession(gateway=target, provider="mock", session_id=session_id,
                           width=int(str(LIGHT_VIDEO["width"])), height=int(str(LIGHT_VIDEO["height"])),
                           join_timeout=avatar_args.pop("join_timeout", TIMEOUT), **avatar_args)
    try:
        async with asyncio.timeout(TIMEOUT):
            await room.connect(e2e.target.url, agent_token(e2e, f"agent-{session_id}"))
            with fake_job_context(room=room) if job else contextlib.nullcontext() as job_ctx:
                await avatar.start(session, room)
                await session.start(Agent(instructions="You are a test."), room=room,
                                    room_options=RoomOptions(audio_input=False))
        world = World(e2e, gateway, viewer, room, session, avatar, identity, job_ctx)
        assert avatar.audio_output is not None
        out = avatar.audio_output

        def on_finished(ev: PlaybackFinishedEvent) -> None:
            world.finished.append(ev)
            world.sent.append(out.last_sent)

        out.on("playback_finished", on_finished)
        avatar.audio_output.on("playback_started", lambda _: world.started.set())
        if not headless:
            await e2e.watch(viewer)
        yield world
    finally:
        async with asyncio.timeout(TIMEOUT):
            await session.aclose()
            await avatar.aclose()
            await room.disconnect()


def assert_played_whole(world: World, text: str, index: int = -1) -> None:
    finished, sent = world.finished[index], world.sent[index]
    assert not finished.interrupted
    assert utterance_seconds(text) <= sent <= utterance_seconds(text) + MARKERS_MAX_S
    assert finished.playback_position == pytest.approx(sent, abs=POSITION_TOL)


def assert_no_session_left(world: World) -> None:
    if world.gateway is not None:
        assert world.gateway.manager.active() == [], "the gateway session outlived the avatar"


async def test_say_returns_when_the_avatar_played_it(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        text = words(8)
        heard_from = len(world.viewer.rx.audio)
        assert await world.say(text) is not None
        assert_played_whole(world, text)
        await world.heard(utterance_seconds(text), heard_from)
        message = _last_assistant_message(world.session)
        assert message.text_content == text and not message.interrupted


async def test_a_generated_reply_plays_through_the_avatar(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        heard_from = len(world.viewer.rx.audio)
        async with asyncio.timeout(TIMEOUT):
            await world.session.generate_reply(user_input="hello")
        assert_played_whole(world, REPLY)
        await world.heard(utterance_seconds(REPLY), heard_from)
        assert _last_assistant_message(world.session).text_content == REPLY


async def test_interrupt_mid_utterance_cuts_at_what_was_heard(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        text = words(24)  # 6 s
        length = utterance_seconds(text)
        heard_from = len(world.viewer.rx.audio)
        handle = world.session.say(text)
        async with asyncio.timeout(TIMEOUT):
            await world.started.wait()
        await world.heard(1.0, heard_from)  # mid-utterance at the viewer
        handle.interrupt()
        async with asyncio.timeout(TIMEOUT):
            await handle
        assert handle.interrupted
        finished = world.finished[-1]
        assert finished.interrupted
        assert 0.0 < finished.playback_position < length
        message = _last_assistant_message(world.session)
        assert message.interrupted
        cut = message.text_content or ""
        print(f"\ninterrupted at {finished.playback_position:.3f}s of {length:.3f}s; transcript: {cut!r}")
        assert len(cut) < len(text) and text.startswith(cut.strip())


async def test_many_utterances_empty_and_immediate_interrupts_never_hang(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        for n in (3, 1, 5):  # in a row, each played to its end
            assert await world.say(words(n)) is not None
            assert_played_whole(world, words(n))

        count = len(world.finished)
        await world.say("")  # no audio: no segment, nothing to wait for
        assert len(world.finished) == count

        for _ in range(3):  # interrupted before (or as) its audio starts
            handle = world.session.say(words(12))
            handle.interrupt()
            async with asyncio.timeout(TIMEOUT):
                await handle
            assert handle.interrupted

        queued = [world.session.say(words(n)) for n in (2, 3)]  # queued behind each other
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*queued)
        assert_played_whole(world, words(2), -2)
        assert_played_whole(world, words(3), -1)

        # the sink's accounting: every segment it counted was finished exactly once
        out = world.avatar.audio_output
        assert out is not None and out._pending_playback_count == 0


async def test_a_lost_stream_is_opened_again_for_the_next_utterance(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        out = world.avatar.audio_output
        assert out is not None
        handle = world.session.say(words(16))
        async with asyncio.timeout(TIMEOUT):
            await world.started.wait()
        assert out._conn is not None
        out._conn.stream.cancel()  # the call drops mid-utterance; the session lives on
        async with asyncio.timeout(TIMEOUT):
            await handle
        assert world.finished[-1].interrupted
        assert await world.say(words(3)) is not None
        assert_played_whole(world, words(3))
        assert out.reopened == 1


async def test_a_network_drop_mid_utterance_is_survived(e2e: Harness) -> None:
    proxy = TcpProxy()
    try:
        async with agent_world(e2e, proxy=proxy) as world:
            out = world.avatar.audio_output
            assert out is not None
            handle = world.session.say(words(16))
            async with asyncio.timeout(TIMEOUT):
                await world.started.wait()
            assert proxy.cut() >= 1  # the TCP connection to the gateway drops mid-utterance
            async with asyncio.timeout(TIMEOUT):
                await handle
            assert world.finished[-1].interrupted
            assert await world.say(words(3)) is not None  # over a new connection, on a new stream
            assert_played_whole(world, words(3))
            assert out.reopened == 1 and proxy.connections >= 2
    finally:
        await proxy.aclose()


async def test_the_gateway_stopped_under_a_speaking_agent_fails_loudly_and_never_hangs(
        e2e: Harness, caplog: pytest.LogCaptureFixture) -> None:
    env = clean_env(LIVEKIT_URL=e2e.target.url, LIVEKIT_API_KEY=e2e.target.api_key,
                    LIVEKIT_API_SECRET=e2e.target.api_secret)
    cli = await GatewayProcess.start("--listen", "127.0.0.1:0", "--shutdown-grace", "1", env=env)
    try:
        port = int((await cli.wait_line(r"listening on port (\d+)")).group(1))
        async with agent_world(e2e, gateway_target=f"127.0.0.1:{port}") as world:
            handle = world.session.say(words(40))  # 10 s
            async with asyncio.timeout(TIMEOUT):
                await world.started.wait()
            cli.proc.send_signal(signal.SIGTERM)  # the gateway restarts under the speaking agent
            async with asyncio.timeout(TIMEOUT):
                await handle  # returns: finished by the gateway's shutdown (or the lost stream), never hangs
            assert world.finished and world.finished[-1].interrupted
            assert await cli.wait() == 0
            await e2e.assert_avatar_left(world.viewer, world.avatar_identity)
            async with asyncio.timeout(TIMEOUT):
                await world.session.say(words(2))  # later speech is refused loudly, and say() still returns
            refused = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], AvatarStreamError)]
            assert refused, "speech after the gateway went away was not refused"
    finally:
        await cli.aclose()


async def test_embedded_gateway_plays_and_stops_with_the_avatar(e2e: Harness) -> None:
    frozen = gc.get_freeze_count()
    async with agent_world(e2e, embedded=True) as world:
        # frozen objects can still be freed (the count falls); a gc.freeze() would add every live object to it
        assert gc.get_freeze_count() <= frozen, "the embedded gateway froze the agent's objects out of GC"
        assert world.avatar.gateway_target.startswith("unix:/")
        text = words(6)
        heard_from = len(world.viewer.rx.audio)
        assert await world.say(text) is not None
        assert_played_whole(world, text)
        await world.heard(utterance_seconds(text), heard_from)
        await world.avatar.aclose()
        await e2e.assert_avatar_left(world.viewer, world.avatar_identity)
        assert world.avatar._embedded is not None and world.avatar._embedded.server is None


async def test_closing_the_avatar_ends_the_session_and_it_leaves(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        await world.say(words(2))
        await world.avatar.aclose()
        assert_no_session_left(world)
        await e2e.assert_avatar_left(world.viewer, world.avatar_identity)


async def test_closing_the_agent_session_ends_the_avatar_session(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        await world.say(words(2))
        async with asyncio.timeout(TIMEOUT):
            await world.session.aclose()
        await e2e.assert_avatar_left(world.viewer, world.avatar_identity)
        assert world.avatar._closing is not None
        async with asyncio.timeout(TIMEOUT):
            await world.avatar._closing
        assert_no_session_left(world)


async def test_job_shutdown_ends_the_avatar_session(e2e: Harness) -> None:
    async with agent_world(e2e, job=True) as world:
        await world.say(words(2))
        assert world.job is not None
        callbacks = world.job._shutdown_callbacks  # what the job runs when it shuts down
        assert callbacks, "AvatarSession.start registered no job shutdown callback"
        async with asyncio.timeout(TIMEOUT):
            for callback in callbacks:
                await callback("job shutdown")
        assert_no_session_left(world)
        await e2e.assert_avatar_left(world.viewer, world.avatar_identity)


async def test_the_agent_leaving_the_room_ends_the_avatar_session(e2e: Harness) -> None:
    async with agent_world(e2e) as world:
        await world.say(words(2))
        await connected(world.room)  # Room.disconnect() does nothing while the SDK is reconnecting
        await world.room.disconnect()
        await e2e.assert_avatar_left(world.viewer, world.avatar_identity)
        assert world.avatar._closing is not None
        async with asyncio.timeout(TIMEOUT):
            await world.avatar._closing
        assert_no_session_left(world)


async def test_an_avatar_that_never_appears_fails_loudly(e2e: Harness, caplog: pytest.LogCaptureFixture) -> None:
    # a headless gateway publishes nowhere: the session starts, its avatar never joins the room
    async with agent_world(e2e, headless=True, join_timeout=0.5) as world:
        with pytest.raises(AvatarJoinError):
            await world.avatar.wait_for_join(timeout=TIMEOUT)
        assert world.avatar._closing is not None
        async with asyncio.timeout(TIMEOUT):
            await world.avatar._closing
        assert_no_session_left(world)
        # speech does not silently go nowhere: it is refused, and say() still returns
        async with asyncio.timeout(TIMEOUT):
            await world.session.say(words(2))
        assert world.finished == [] or all(f.playback_position == 0.0 for f in world.finished)
        refused = [r.exc_info[1] for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], AvatarStreamError)]
        assert refused and all(isinstance(e.__cause__, AvatarJoinError) for e in refused), refused


# -- helpers
async def connected(room: rtc.Room) -> None:
    """Until `room` is connected (it may be resuming after a stall of this shared event loop)."""
    changed = asyncio.Event()
    room.on("connection_state_changed", lambda _: changed.set())
    async with asyncio.timeout(TIMEOUT):
        while not room.isconnected():
            changed.clear()
            await changed.wait()


def _last_assistant_message(session: AgentSession[Any]) -> llm.ChatMessage:
    messages = [i for i in session.history.items if isinstance(i, llm.ChatMessage) and i.role == "assistant"]
    assert messages, "no assistant message in the history"
    return messages[-1]
