"""A LiveKit Agents worker whose agent has a face: any STT / LLM / TTS, and the avatar through the gateway.

    LIVEKIT_URL=wss://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... \\
    AVATAR_GATEWAY_URL=gateway.internal:50051 AVATAR_GATEWAY_API_KEY=... \\
    python -m examples.agent_worker dev

Models are LiveKit Inference descriptors by default (`AGENT_STT`, `AGENT_LLM`, `AGENT_TTS` override them; any
plugin's object works the same in `AgentSession`). The avatar: `AVATAR_PROVIDER` (default `mock`), `AVATAR_ID`.
`AVATAR_GATEWAY_URL=embedded` runs the gateway inside this worker (it then needs the LiveKit secret, which it has).
The three lines that give the agent its face are in `start_agent`; README, "An agent worker", shows the same agent
with a stock vendor plugin beside it.
"""

from __future__ import annotations

import os
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, JobContext, WorkerOptions, cli
from livekit.agents.voice.room_io import RoomOptions

from agent_client.livekit import AvatarSession

INSTRUCTIONS = "You are a friendly assistant with a face. Keep answers short."


def models(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The session's STT, LLM and TTS (LiveKit Inference descriptors unless the environment names others)."""
    env = dict(os.environ) if env is None else env
    return {"stt": env.get("AGENT_STT", "deepgram/nova-3"), "llm": env.get("AGENT_LLM", "openai/gpt-4.1-mini"),
            "tts": env.get("AGENT_TTS", "cartesia/sonic-2")}


async def start_agent(room: rtc.Room, session: AgentSession[Any], room_options: RoomOptions | None = None,
                      **avatar_args: Any) -> AvatarSession:
    """Give the agent its avatar, then start it in `room` (connected). Returns the avatar session."""
    avatar = AvatarSession(provider=os.environ.get("AVATAR_PROVIDER", "mock"),
                           avatar_id=os.environ.get("AVATAR_ID", ""), **avatar_args)
    await avatar.start(session, room)  # before session.start(): the agent's audio goes to the avatar
    await session.start(Agent(instructions=INSTRUCTIONS), room=room, room_options=room_options or RoomOptions())
    return avatar


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    # the avatar's sink cannot pause: false-interruption resume is off (livekit-agents warns otherwise)
    session: AgentSession[Any] = AgentSession(**models(),
                                              turn_handling={"interruption": {"resume_false_interruption": False}})
    await start_agent(ctx.room, session)  # the avatar session ends with the job (its shutdown callback)
    await session.generate_reply(instructions="Greet the user.")


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
