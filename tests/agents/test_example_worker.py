"""examples/agent_worker.py does what the README says: its agent gets the gateway's avatar in three lines and
speaks through it (with the deterministic models here instead of LiveKit Inference)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.io import PlaybackFinishedEvent
from livekit.agents.voice.room_io import RoomOptions

from agent_client.livekit.testing import FixedLLM, ToneTTS, utterance_seconds
from examples.agent_worker import models, start_agent
from tests.agents.test_avatar_session import MARKERS_MAX_S, agent_token, words
from tests.e2e.e2e_helpers import TIMEOUT, Harness, avatar_identity_for, new_session_id

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_models_come_from_the_environment() -> None:
    assert models({}) == {"stt": "deepgram/nova-3", "llm": "openai/gpt-4.1-mini", "tts": "cartesia/sonic-2"}
    assert models({"AGENT_TTS": "elevenlabs/eleven_flash_v2_5"})["tts"] == "elevenlabs/eleven_flash_v2_5"


async def test_the_example_agent_speaks_through_the_avatar(e2e: Harness) -> None:
    gateway = await e2e.start_gateway()
    session_id = new_session_id()
    viewer = await e2e.viewer(avatar_identity_for(session_id))
    room = rtc.Room()
    session: AgentSession[Any] = AgentSession(
        tts=ToneTTS(), llm=FixedLLM("unused"), turn_handling={"interruption": {"resume_false_interruption": False}})
    finished: list[PlaybackFinishedEvent] = []
    async with asyncio.timeout(TIMEOUT):
        await room.connect(e2e.target.url, agent_token(e2e, f"agent-{session_id}"))
        avatar = await start_agent(room, session, RoomOptions(audio_input=False), gateway=f"127.0.0.1:{gateway.port}",
                                   session_id=session_id, width=320, height=240)
    try:
        assert avatar.audio_output is not None
        avatar.audio_output.on("playback_finished", finished.append)
        await e2e.watch(viewer)
        async with asyncio.timeout(TIMEOUT):
            await session.say(words(4))
        assert finished and not finished[-1].interrupted
        assert utterance_seconds(words(4)) <= finished[-1].playback_position <= utterance_seconds(words(4)) + \
            MARKERS_MAX_S
    finally:
        async with asyncio.timeout(TIMEOUT):
            await session.aclose()
            await avatar.aclose()
            await room.disconnect()
    assert gateway.manager.active() == []
