"""Speech to a viewer through a room-native vendor, side by side in one run through the same loopback server:

- none: the agent publishes its speech itself (no avatar: the floor);
- direct: the agent's own `DataStreamAudioOutput` streams to the vendor's worker (the room transport: the gateway
  only starts, watches and stops the vendor);
- relay: StreamAudio -> the gateway (its own process) -> its relay participant's `lk.audio_stream` -> the worker.

The vendor is the fake Tavus (fakes/room_native/): a stock worker, livekit-agents' `DataStreamAudioReceiver` +
`AvatarRunner` with the mock's face, so both avatar paths meet the same worker and differ only in who streams to it.
Figures at the SDK viewer: audio sent -> voice heard, interrupt sent -> silence heard, start -> first frame. The
agent sends 20 ms chunks of the bundled clip (at the vendor's 24 kHz) in real time and interrupts after 6 s.

Run inside the network namespace: ./run bench vendor_paths --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np
from avatar.v1 import session_pb2
from livekit import rtc
from livekit.agents.voice.avatar import DataStreamAudioOutput

from agent_client import AvatarGatewayClient, PlaybackFinished
from bench.gateway_cli import GatewayUnderTest
from bench.three_paths import ROOM, RUN_TIMEOUT_S, SPEAK_S, Run, Watchers, direct, print_table, talk_and_interrupt
from examples.agent import load_clip
from fakes.room_native import FakeVendors
from loopback import loopback_host, not_in_namespace_reason
from loopback.process import LoopbackProcess

KEY = "bench-vendor-key"
RATE = 24000  # the fake Tavus's rate: every path sends it, so none resamples on the way
KEYS = ("sent_to_voice_ms", "clear_to_silence_ms", "first_frame_ms")


def at_rate(pcm: np.ndarray, rate: int) -> np.ndarray:
    """The clip at RATE (linear interpolation: the figures are about time, not fidelity)."""
    n = round(pcm.size * RATE / rate)
    out: np.ndarray = np.interp(np.arange(n) * rate / RATE, np.arange(pcm.size), pcm).astype(np.int16)
    return out


def frame(chunk: np.ndarray) -> rtc.AudioFrame:
    return rtc.AudioFrame(chunk.tobytes(), RATE, 1, chunk.size)


async def via_relay(lk: LoopbackProcess, client: AvatarGatewayClient, n: int, pcm: np.ndarray) -> dict[str, float]:
    session_id = f"relay-{n}-{int(time.time()) % 100000}"
    watchers = Watchers(lk, f"r{n}", f"avatar-tavus-{session_id}", False)
    await watchers.join()
    run = Run(started_at=time.monotonic())
    session = await client.start_session("tavus", room_name=ROOM, agent_identity=f"relay-agent-{n}",
                                         session_id=session_id, avatar_id="face")
    try:
        await watchers.wait_ready(video=True)
        async with client.stream_audio(session.name, sample_rate=RATE) as stream:
            await talk_and_interrupt(run, pcm, RATE, stream.send, stream.clear)
            async with asyncio.timeout(10):
                async for event in stream:
                    if isinstance(event, PlaybackFinished):
                        break
        return watchers.measure(run)
    finally:
        await client.end_session(session.name)
        await watchers.aclose()


async def via_direct(lk: LoopbackProcess, client: AvatarGatewayClient, n: int, pcm: np.ndarray) -> dict[str, float]:
    session_id = f"direct-{n}-{int(time.time()) % 100000}"
    identity = f"avatar-tavus-{session_id}"
    watchers = Watchers(lk, f"v{n}", identity, False)
    await watchers.join()
    agent = rtc.Room()
    await agent.connect(lk.url, lk.token(f"direct-agent-{n}", ROOM, kind="agent"))
    run = Run(started_at=time.monotonic())
    session = await client.start_session("tavus", room_name=ROOM, agent_identity=f"direct-agent-{n}",
                                         session_id=session_id, avatar_id="face",
                                         audio_transport=session_pb2.AUDIO_TRANSPORT_ROOM)
    output = DataStreamAudioOutput(agent, destination_identity=identity, sample_rate=RATE,
                                   wait_remote_track=rtc.TrackKind.KIND_VIDEO)
    try:
        await watchers.wait_ready(video=True)

        async def send(chunk: np.ndarray) -> None:
            await output.capture_frame(frame(chunk))

        await talk_and_interrupt(run, pcm, RATE, send, output.clear_buffer)
        return watchers.measure(run)
    finally:
        await client.end_session(session.name)
        await agent.disconnect()
        await watchers.aclose()


async def main(args: argparse.Namespace) -> None:
    clip, rate = load_clip()
    pcm = at_rate(clip[: round(rate * (SPEAK_S + 1))], rate)
    results: dict[str, list[dict[str, float]]] = {"none": [], "direct": [], "relay": []}
    async with LoopbackProcess.start() as lk, FakeVendors(loopback_host(), KEY) as vendors:
        os.environ.update(TAVUS_API_KEY=KEY, TAVUS_API_URL=vendors.url)  # the gateway process's vendor settings
        gateway = await GatewayUnderTest.start(1, livekit=(lk.url, lk.api_key, lk.api_secret))
        try:
            async with AvatarGatewayClient(f"127.0.0.1:{gateway.port}", timeout=30) as client:
                for n in range(args.runs):  # interleaved: the paths see the same machine
                    async with asyncio.timeout(RUN_TIMEOUT_S):
                        results["none"].append(await direct(lk, n, pcm, RATE, False))
                    async with asyncio.timeout(RUN_TIMEOUT_S):
                        results["direct"].append(await via_direct(lk, client, n, pcm))
                    async with asyncio.timeout(RUN_TIMEOUT_S):
                        results["relay"].append(await via_relay(lk, client, n, pcm))
                    print(f"run {n}:", json.dumps({k: v[-1] for k, v in results.items()}), flush=True)
        finally:
            await gateway.stop()
        await vendors.wait_until(lambda f: not f.running())
    print_table(results, KEYS)


if __name__ == "__main__":
    reason = not_in_namespace_reason()
    if reason:
        sys.exit(f"vendor_paths: {reason}")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per path")
    asyncio.run(main(parser.parse_args()))
