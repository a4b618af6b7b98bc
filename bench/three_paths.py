"""Latency side by side, one run, three ways speech reaches a viewer through the same loopback server:

- direct: the agent publishes its speech straight into the room (no avatar: the floor);
- stock: livekit-agents' `DataStreamAudioOutput` -> a stock avatar worker built from livekit-agents' own
  `AvatarRunner` + `DataStreamAudioReceiver`, with the mock's face as its `VideoGenerator`;
- ours: StreamAudio -> the gateway (its own process) -> the room.

Per run, at the SDK viewer (and with --browser at a headless Chromium page too, `viewer.browser`): audio sent ->
voice heard, audio sent -> lips moving, A/V offset, interrupt sent -> silence heard and mouth closed, and (avatars)
start -> first frame. The agent sends 20 ms chunks in real time.

Run inside the network namespace: ./run bench three_paths --runs 5 [--browser]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, DataStreamAudioOutput, DataStreamAudioReceiver

from agent_client import AvatarGatewayClient, PlaybackFinished, StreamWarning
from bench.gateway_cli import GatewayUnderTest
from bench.percentiles import percentile
from examples.agent import load_clip
from fakes.room_native.face_generator import MockFaceGenerator
from loopback import not_in_namespace_reason
from loopback.process import LoopbackProcess
from viewer.browser import BrowserViewer
from viewer.participant import Viewer
from viewer.sync import av_offset

ROOM = "paths"
W, H, FPS = 640, 480, 30
CHUNK_S = 0.02
SPEAK_S = 6.0  # seconds of the clip spoken before the interrupt
VOICED, OPEN, QUIET, CLOSED = 0.3, 0.3, 0.05, 0.1
TAIL_S = 1.0  # after the interrupt, for what follows it to reach the viewer
RUN_TIMEOUT_S = 60.0  # one path's run; a safety net


@dataclass
class Run:
    sent_at: float = 0.0
    clear_at: float = 0.0
    started_at: float = 0.0
    figures: dict[str, float] = field(default_factory=dict)


def measure(viewer: Viewer | BrowserViewer, run: Run) -> dict[str, float]:
    rx = viewer.rx
    out: dict[str, float] = {}
    voice = next((t for t, lv in rx.audio if t > run.sent_at and lv >= VOICED), None)
    if voice is not None:
        out["sent_to_voice_ms"] = (voice - run.sent_at) * 1000
    lips = next((v.shown for v in rx.video if v.shown > run.sent_at and v.opening >= OPEN), None)
    if lips is not None:
        out["sent_to_lips_ms"] = (lips - run.sent_at) * 1000
    quiet = next((t for t, lv in rx.audio if t > run.clear_at + 0.02 and lv < QUIET), None)
    if quiet is not None:
        out["clear_to_silence_ms"] = (quiet - run.clear_at) * 1000
    closed = next((v.shown for v in rx.video if v.shown > run.clear_at and v.opening < CLOSED), None)
    if closed is not None:
        out["clear_to_mouth_closed_ms"] = (closed - run.clear_at) * 1000
    if rx.video:
        offset, corr = av_offset(rx.lips(), rx.audio)
        out["av_offset_ms"], out["av_correlation"] = offset * 1000, corr
        if viewer.first_video_at is not None:
            out["first_frame_ms"] = (viewer.first_video_at - run.started_at) * 1000
    return out


class Watchers:
    """Who watches one run: the SDK viewer, and a Chromium page if asked for."""

    def __init__(self, lk: LoopbackProcess, name: str, identity: str, browser: bool) -> None:
        self.viewer = Viewer(lk.url, lk.token(f"viewer-{name}", ROOM), avatar_identity=identity)
        self.page = BrowserViewer(lk.url, lk.token(f"browser-{name}", ROOM), avatar_identity=identity) \
            if browser else None

    async def join(self) -> None:
        await self.viewer.join()
        if self.page is not None:
            await self.page.open()
            await self.page.wait_until(lambda: self._noted("joined"))

    async def wait_ready(self, *, video: bool) -> None:
        """Until both are subscribed to what they watch (and, for an avatar, have its first frame)."""
        async with asyncio.timeout(30):
            if video:
                await self.viewer.first_frame.wait()
            page = self.page
            if page is not None:
                await page.wait_until(
                    lambda: self._noted("subscribed audio") and (not video or page.first_frame.is_set()))

    def _noted(self, what: str) -> bool:
        return self.page is not None and any(event == what for _, event in self.page.events)

    def measure(self, run: Run) -> dict[str, float]:
        out = measure(self.viewer, run)
        if self.page is not None:
            out.update({f"browser_{k}": v for k, v in measure(self.page, run).items()})
        return out

    async def aclose(self) -> None:
        await self.viewer.aclose()
        if self.page is not None:
            await self.page.aclose()


async def real_time(pcm: np.ndarray, rate: int, send: Any) -> None:
    """Send `pcm` in CHUNK_S pieces on a real-time schedule."""
    step = round(rate * CHUNK_S)
    start = time.monotonic()
    for k, i in enumerate(range(0, pcm.size, step)):
        await send(pcm[i:i + step])
        delay = start + (k + 1) * CHUNK_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def talk_and_interrupt(run: Run, pcm: np.ndarray, rate: int, send: Any, clear: Any) -> None:
    """Speak in real time for SPEAK_S, interrupt (`clear`), stop speaking, let the aftermath reach the viewer."""
    run.sent_at = time.monotonic()
    talk = asyncio.ensure_future(real_time(pcm, rate, send))
    await asyncio.sleep(SPEAK_S)
    run.clear_at = time.monotonic()
    talk.cancel()
    result = clear()
    if asyncio.iscoroutine(result):
        await result
    await asyncio.gather(talk, return_exceptions=True)
    await asyncio.sleep(TAIL_S)


async def direct(lk: LoopbackProcess, n: int, pcm: np.ndarray, rate: int, browser: bool) -> dict[str, float]:
    identity = f"direct-{n}"
    watchers = Watchers(lk, f"d{n}", identity, browser)
    await watchers.join()
    room = rtc.Room()
    await room.connect(lk.url, lk.token(identity, ROOM, kind="agent"))
    source = rtc.AudioSource(rate, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("avatar_audio", source)
    pub = await room.local_participant.publish_track(track, rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_MICROPHONE))
    await pub.wait_for_subscription()  # the viewer's (it auto-subscribes); it has no video to wait for
    await watchers.wait_ready(video=False)
    run = Run()

    async def send(chunk: np.ndarray) -> None:
        await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size))

    await talk_and_interrupt(run, pcm, rate, send, source.clear_queue)
    try:
        return watchers.measure(run)
    finally:
        await room.disconnect()
        await watchers.aclose()
        await source.aclose()


async def stock(lk: LoopbackProcess, n: int, pcm: np.ndarray, rate: int, browser: bool) -> dict[str, float]:
    worker_id, agent_id = f"stock-avatar-{n}", f"stock-agent-{n}"
    watchers = Watchers(lk, f"s{n}", worker_id, browser)
    await watchers.join()
    agent = rtc.Room()
    await agent.connect(lk.url, lk.token(agent_id, ROOM, kind="agent"))
    run = Run(started_at=time.monotonic())
    worker = rtc.Room()
    await worker.connect(lk.url, lk.token(worker_id, ROOM, kind="agent"))
    runner = AvatarRunner(worker, audio_recv=DataStreamAudioReceiver(worker, sender_identity=agent_id),
                          video_gen=MockFaceGenerator(rate, W, H, FPS),
                          options=AvatarOptions(video_width=W, video_height=H, video_fps=FPS,
                                                audio_sample_rate=rate, audio_channels=1))
    await runner.start()
    output = DataStreamAudioOutput(agent, destination_identity=worker_id, wait_remote_track=rtc.TrackKind.KIND_VIDEO)
    try:
        await watchers.wait_ready(video=True)

        async def send(chunk: np.ndarray) -> None:
            await output.capture_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size))

        await talk_and_interrupt(run, pcm, rate, send, output.clear_buffer)
        return watchers.measure(run)
    finally:
        await runner.aclose()
        await agent.disconnect()
        await worker.disconnect()
        await watchers.aclose()


async def ours(lk: LoopbackProcess, client: AvatarGatewayClient, n: int, pcm: np.ndarray, rate: int,
               browser: bool) -> dict[str, float]:
    session_id = f"ours-{n}-{int(time.time()) % 100000}"
    watchers = Watchers(lk, f"o{n}", f"avatar-mock-{session_id}", browser)
    await watchers.join()
    run = Run(started_at=time.monotonic())
    session = await client.start_session("mock", room_name=ROOM, agent_identity=f"ours-agent-{n}",
                                         session_id=session_id, width=W, height=H, fps=FPS)
    try:
        await watchers.wait_ready(video=True)
        async with client.stream_audio(session.name, sample_rate=rate) as stream:
            await talk_and_interrupt(run, pcm, rate, stream.send, stream.clear)
            underruns = 0
            async with asyncio.timeout(10):
                async for event in stream:
                    underruns += isinstance(event, StreamWarning) and event.reason == "PLAYOUT_UNDERRUN"
                    if isinstance(event, PlaybackFinished):
                        break
        return {**watchers.measure(run), "underruns": underruns}
    finally:
        await client.end_session(session.name)
        await watchers.aclose()


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} / {percentile(values, 95):.0f}"


async def main(args: argparse.Namespace) -> None:
    pcm, rate = load_clip()
    pcm = pcm[: round(rate * (SPEAK_S + 1))]
    results: dict[str, list[dict[str, float]]] = {"direct": [], "stock": [], "ours": []}
    async with LoopbackProcess.start() as lk:
        gateway = await GatewayUnderTest.start(1, livekit=(lk.url, lk.api_key, lk.api_secret))
        try:
            async with AvatarGatewayClient(f"127.0.0.1:{gateway.port}", timeout=30) as client:
                for n in range(args.runs):  # interleaved: the three paths see the same machine
                    async with asyncio.timeout(RUN_TIMEOUT_S):
                        results["direct"].append(await direct(lk, n, pcm, rate, args.browser))
                    async with asyncio.timeout(RUN_TIMEOUT_S):
                        results["stock"].append(await stock(lk, n, pcm, rate, args.browser))
                    async with asyncio.timeout(RUN_TIMEOUT_S):
                        results["ours"].append(await ours(lk, client, n, pcm, rate, args.browser))
                    print(f"run {n}:", json.dumps({k: v[-1] for k, v in results.items()}), flush=True)
        finally:
            await gateway.stop()
    keys: tuple[str, ...] = ("sent_to_voice_ms", "sent_to_lips_ms", "av_offset_ms", "clear_to_silence_ms",
                             "clear_to_mouth_closed_ms", "first_frame_ms", "underruns")
    if args.browser:
        keys = (*keys, *(f"browser_{k}" for k in keys))
    print_table(results, keys)


def print_table(results: dict[str, list[dict[str, float]]], keys: tuple[str, ...]) -> None:
    """One row per figure, p50 / p95 per path, then every run's figures as JSON."""
    print("figure (p50 / p95 ms) | " + " | ".join(results))
    for key in keys:
        print(key, "|", " | ".join(summary([r[key] for r in runs if key in r]) for runs in results.values()))
    print(json.dumps(results))


if __name__ == "__main__":
    reason = not_in_namespace_reason()
    if reason:
        sys.exit(f"three_paths: {reason}")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per path")
    parser.add_argument("--browser", action="store_true", help="measure at a headless Chromium page too")
    asyncio.run(main(parser.parse_args()))
