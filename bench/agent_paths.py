"""A real livekit-agents AgentSession behind an avatar, two ways, side by side in one run:

- plugin: `agent_client.livekit.AvatarSession` (StartSession + StreamAudio);
- stock: a session started with AUDIO_TRANSPORT_ROOM and livekit-agents' own `DataStreamAudioOutput` aimed at the
  avatar (lk.audio_stream + lk.playback_* RPCs);

through the same gateway process and loopback server process. Per run:
- start -> first frame: `avatar.start()` (stock: StartSession) called -> the viewer, already in the room, decodes the
  avatar's first frame;
- say() return after the last sample: the viewer heard the utterance's last loud 10 ms chunk -> `session.say()`
  returned (negative: it returned before the viewer heard the end).

Run inside the network namespace: ./run bench agent_paths (or scripts/netns-run .venv/bin/python -m bench.agent_paths)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from avatar.v1 import session_pb2
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.agents.voice.room_io import RoomOptions

from agent_client import AvatarGatewayClient
from agent_client.livekit import AvatarSession
from agent_client.livekit.testing import FixedLLM, ToneTTS
from bench.gateway_cli import GatewayUnderTest
from bench.percentiles import percentile
from loopback import not_in_namespace_reason
from loopback.process import LoopbackProcess
from viewer.participant import Viewer

ROOM = "agents"
LOUD = 0.5  # the tone's level at the viewer (viewer.sync.envelope_level)
TEXT = " ".join(f"word{i}" for i in range(8))  # 2 s of tone
WIDTH, HEIGHT = 640, 480
TAIL_S = 0.5  # longer than any jitter buffer holds audio here


async def one_run(lk: LoopbackProcess, target: str, client: AvatarGatewayClient, path: str, n: int
                  ) -> dict[str, float]:
    session_id = f"{path}-{n}-{int(time.time() * 1000) % 100000}"
    avatar_identity = f"avatar-mock-{session_id}"
    viewer = Viewer(lk.url, lk.token(f"viewer-{session_id}", ROOM), avatar_identity=avatar_identity)
    await viewer.join()
    room = rtc.Room()
    await room.connect(lk.url, lk.token(f"agent-{session_id}", ROOM, kind="agent"))
    agent: AgentSession[Any] = AgentSession(
        tts=ToneTTS(), llm=FixedLLM("unused"), turn_handling={"interruption": {"resume_false_interruption": False}})
    avatar: AvatarSession | None = None
    close: Callable[[], Awaitable[object]]
    t0 = time.monotonic()
    if path == "plugin":
        avatar = AvatarSession(gateway=target, provider="mock", session_id=session_id, width=WIDTH, height=HEIGHT)
        await avatar.start(agent, room)
        close = avatar.aclose
    else:
        session = await client.start_session("mock", room_name=ROOM, agent_identity=f"agent-{session_id}",
                                             session_id=session_id, width=WIDTH, height=HEIGHT,
                                             audio_transport=session_pb2.AUDIO_TRANSPORT_ROOM)
        agent.output.replace_audio_tail(DataStreamAudioOutput(room, destination_identity=session.avatar_identity,
                                                              wait_remote_track=rtc.TrackKind.KIND_VIDEO))

        def close() -> Awaitable[object]:
            return client.end_session(session.name)
    try:
        await agent.start(Agent(instructions="benchmark"), room=room, room_options=RoomOptions(audio_input=False))
        async with asyncio.timeout(20):
            await viewer.first_frame.wait()
        assert viewer.first_video_at is not None
        first_frame = viewer.first_video_at - t0
        heard_from = len(viewer.rx.audio)
        async with asyncio.timeout(20):
            await agent.say(TEXT)
        returned = time.monotonic()
        # the last loud chunk the viewer hears of the utterance may come after say() returned: give it TAIL_S
        await asyncio.sleep(TAIL_S)
        last_heard = max(t for t, lv in viewer.rx.audio[heard_from:] if lv >= LOUD)
        return {"first_frame_ms": first_frame * 1000, "say_return_after_last_sample_ms": (returned - last_heard) * 1000}
    finally:
        await agent.aclose()
        await close()
        await room.disconnect()
        await viewer.aclose()


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(statistics.median(values), 1), "p95": round(percentile(values, 95), 1),
            "min": round(min(values), 1), "max": round(max(values), 1)}


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, float]]] = {"plugin": [], "stock": []}
    async with LoopbackProcess.start() as lk:
        gateway = await GatewayUnderTest.start(1, livekit=(lk.url, lk.api_key, lk.api_secret))
        try:
            target = f"127.0.0.1:{gateway.port}"
            async with AvatarGatewayClient(target, timeout=30) as client:
                for n in range(args.runs):  # interleaved: both paths see the same machine
                    for path in ("plugin", "stock"):
                        results[path].append(await one_run(lk, target, client, path, n))
        finally:
            await gateway.stop()
    report = {path: {key: summary([r[key] for r in runs]) for key in runs[0]} for path, runs in results.items()}
    for path, figures in report.items():
        print(path, json.dumps(figures), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    reason = not_in_namespace_reason()
    if reason:
        sys.exit(f"agent_paths: {reason}")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs per path")
    asyncio.run(main(parser.parse_args()))
