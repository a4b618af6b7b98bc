"""A real AgentSession with `agent_client.livekit.AvatarSession` in front of a room-native vendor that plays the
first agent in the room (the fake Tavus): the agent is in the room, so the plugin speaks to the vendor's worker
itself (direct), and the gateway starts, watches and stops the vendor."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.io import PlaybackFinishedEvent
from livekit.agents.voice.room_io import RoomOptions

from agent_client.livekit import AvatarSession
from agent_client.livekit.testing import FixedLLM, ToneTTS, utterance_seconds
from fakes.room_native import FakeVendors
from tests.agents.test_avatar_session import LOUD, MARKERS_MAX_S, REPLY, agent_token, words
from tests.e2e.e2e_helpers import TIMEOUT, Harness, avatar_identity_for, new_session_id
from tests.e2e.room_native_helpers import vendor_registry

pytestmark = pytest.mark.asyncio(loop_scope="session")

FRAME_S = 0.1  # DataStreamAudioReceiver's frame (frame_size_ms 100)


async def test_an_agent_in_the_room_speaks_to_a_first_agent_vendor_directly(e2e: Harness,
                                                                            vendors: FakeVendors) -> None:
    gateway = await e2e.start_gateway(vendor_registry(vendors))
    session_id = new_session_id()
    viewer = await e2e.viewer(avatar_identity_for(session_id, "tavus"))
    room = rtc.Room()
    session: AgentSession[Any] = AgentSession(tts=ToneTTS(), llm=FixedLLM(REPLY))
    avatar = AvatarSession(gateway=f"127.0.0.1:{gateway.port}", provider="tavus", avatar_id="face-1",
                           session_id=session_id, join_timeout=TIMEOUT)
    try:
        async with asyncio.timeout(TIMEOUT):
            await room.connect(e2e.target.url, agent_token(e2e, f"agent-{session_id}"))
            await avatar.start(session, room)
            await session.start(Agent(instructions="You are a test."), room=room,
                                room_options=RoomOptions(audio_input=False))
        assert avatar.direct and avatar.direct_output is not None and avatar.audio_output is None
        finished: list[PlaybackFinishedEvent] = []
        avatar.direct_output.on("playback_finished", finished.append)
        await e2e.watch(viewer)
        text = words(6)
        heard_from = len(viewer.rx.audio)
        async with asyncio.timeout(TIMEOUT):
            await session.say(text)
        (done,) = finished  # from the vendor's worker, which played the agent's own stream
        assert not done.interrupted
        # the vendor counts what it played in its receiver's 100 ms frames (the last one padded)
        assert utterance_seconds(text) - FRAME_S <= done.playback_position <= (
            utterance_seconds(text) + MARKERS_MAX_S + FRAME_S)
        await viewer.wait_until(lambda: sum(lv >= LOUD for _, lv in viewer.rx.audio[heard_from:]) >= 50)
    finally:
        async with asyncio.timeout(TIMEOUT):
            await session.aclose()
            await avatar.aclose()
            await room.disconnect()
    await vendors.wait_until(lambda f: not f.running())
    (vendor_session,) = vendors.sessions.values()
    assert vendor_session.stop_calls == 1 and gateway.manager.active() == []
