"""Room-path figures measured at a real viewer participant, through the loopback development server.

- time to first avatar frame: StartSession called -> the viewer's first decoded avatar frame (N sessions);
- A/V offset at the viewer: mouth opening read from the pixels against the audio envelope (cross-correlation), per
  run, with the session's video_delay at 0 (the gateway's default) and at `--video-delay` if another is given;
- interrupt: clear_buffer received by the gateway -> every queue cleared (gateway metric: after this no stale
  sample can leave), and clear sent -> the viewer hears silence / sees the mouth closed;
- drift: one session speaking continuously for `--drift-minutes`; the A/V offset in each 30 s window, and the
  frame count against audio time.

Run inside the network namespace: scripts/netns-run .venv/bin/python -m bench.av_sync
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agent_client import AvatarGatewayClient, PlaybackFinished, PlaybackStarted, Session
from bench.gateway_cli import GatewayUnderTest
from bench.percentiles import percentile
from examples.agent import load_clip, speak
from loopback import not_in_namespace_reason
from loopback.process import LoopbackProcess
from viewer.browser import BrowserViewer
from viewer.participant import Viewer
from viewer.sync import av_offset

API_KEY = "benchkey"
ROOM = "bench"


@dataclass
class Rig:
    url: str
    secret: str
    gateway: GatewayUnderTest
    client: AvatarGatewayClient
    viewer_token: str
    browser_token: str


@asynccontextmanager
async def rig(rtc_v1: bool = True) -> AsyncIterator[Rig]:
    """The loopback server and the gateway each in its own process (as `./run demo` runs them), the client and the
    viewer in this one, so the viewer's clock is not the gateway's event loop. `rtc_v1=False` makes every
    participant use the two-peer-connection `/rtc` path (the server offers subscriptions itself)."""
    async with LoopbackProcess.start(api_key=API_KEY, extra=() if rtc_v1 else ("--no-rtc-v1",)) as lk:
        gateway = await GatewayUnderTest.start(1, livekit=(lk.url, lk.api_key, lk.api_secret))
        try:
            async with AvatarGatewayClient(f"127.0.0.1:{gateway.port}", timeout=60) as client:
                yield Rig(lk.url, lk.api_secret, gateway, client, lk.token("viewer", ROOM), lk.token("browser", ROOM))
        finally:
            await gateway.stop()


async def first_frames(r: Rig, n: int) -> list[float]:
    out = []
    for i in range(n):
        # the user is already in the room: the viewer joins first, expecting the avatar's identity
        session_id = f"ff-{i}-{secrets.token_hex(4)}"
        viewer = Viewer(r.url, r.viewer_token, avatar_identity=f"avatar-mock-{session_id}")
        await viewer.join()
        t0 = time.monotonic()
        session = await r.client.start_session("mock", room_name=ROOM, agent_identity="agent-1", session_id=session_id)
        async with asyncio.timeout(20):
            await viewer.first_frame.wait()
        assert viewer.first_video_at is not None
        out.append(viewer.first_video_at - t0)
        await r.client.end_session(session.name)
        await viewer.aclose()
    return out


async def speech_run(r: Rig, video_delay: float, interrupt_at: float | None, browser: bool = False
                     ) -> dict[str, float]:
    session = await r.client.start_session("mock", room_name=ROOM, agent_identity="agent-1", video_delay=video_delay)
    page = BrowserViewer(r.url, r.browser_token, avatar_identity=session.avatar_identity) if browser else None
    try:
        if page is not None:
            await page.open()
            await page.wait_until(lambda: page.first_video_at is not None and len(page.rx.audio) >= 50, 30)
        return await _speech_run(r, session, interrupt_at, page)
    finally:
        if page is not None:
            await page.aclose()


async def _speech_run(r: Rig, session: Session, interrupt_at: float | None, page: BrowserViewer | None
                      ) -> dict[str, float]:
    pcm, rate = load_clip()
    pcm = pcm[: rate * 9]
    viewer = Viewer(r.url, r.viewer_token, avatar_identity=session.avatar_identity)
    await viewer.join()
    async with asyncio.timeout(20):
        await viewer.first_frame.wait()
    result: dict[str, float] = {}
    async with r.client.stream_audio(session.name, sample_rate=rate) as stream:
        started = asyncio.Event()
        finished = asyncio.Event()

        async def read() -> None:
            async for ev in stream:
                if isinstance(ev, PlaybackStarted):
                    started.set()
                if isinstance(ev, PlaybackFinished):
                    finished.set()

        reader = asyncio.create_task(read())
        talker = asyncio.create_task(speak(stream, pcm, rate, speed=1.5, end=False))
        if interrupt_at is not None:
            await started.wait()
            await asyncio.sleep(interrupt_at)
            t_clear = time.monotonic()
            await stream.clear()
            talker.cancel()
            await finished.wait()
            await asyncio.sleep(1.0)  # let the viewer receive what followed the interrupt
            quiet = next((t for t, lv in viewer.rx.audio if t > t_clear + 0.02 and lv < 0.05), None)
            closed = next((v.t for v in viewer.rx.video if v.t > t_clear and v.opening < 0.1), None)
            if quiet is not None:
                result["clear_to_silence_at_viewer_ms"] = (quiet - t_clear) * 1000
            if closed is not None:
                result["clear_to_mouth_closed_at_viewer_ms"] = (closed - t_clear) * 1000
        else:
            await talker
            await stream.end_segment()
            await finished.wait()
        await asyncio.gather(talker, return_exceptions=True)
    await reader
    offset, corr = av_offset(viewer.rx.lips(), viewer.rx.audio)
    result.update(offset_ms=offset * 1000, correlation=corr)
    if page is not None:
        await page.wait_until(lambda: page.rx.audio[-1][0] >= viewer.rx.audio[-1][0], 10)  # its posts caught up
        b_offset, b_corr = av_offset(page.rx.lips(), page.rx.audio)
        w_offset, w_corr = av_offset(page.rx.lips(), page.webaudio)
        result.update(browser_offset_ms=b_offset * 1000, browser_correlation=b_corr,
                      browser_frames_not_seen=page.dropped_frames, webaudio_offset_ms=w_offset * 1000,
                      webaudio_correlation=w_corr)
    await r.client.end_session(session.name)
    await viewer.aclose()
    return result


async def drift(r: Rig, minutes: float, video_delay: float) -> dict[str, object]:
    pcm, rate = load_clip()
    session = await r.client.start_session("mock", room_name=ROOM, agent_identity="agent-1", video_delay=video_delay,
                                           idle_timeout=600, max_duration=3600)
    viewer = Viewer(r.url, r.viewer_token, avatar_identity=session.avatar_identity)
    await viewer.join()
    async with asyncio.timeout(20):
        await viewer.first_frame.wait()
    before = (await r.client.get_session(session.name)).stats
    t_start = time.monotonic()
    async with r.client.stream_audio(session.name, sample_rate=rate) as stream:
        reader = asyncio.create_task(_drain(stream))
        while time.monotonic() - t_start < minutes * 60:
            await speak(stream, pcm, rate, speed=1.0)
    await reader
    after = (await r.client.get_session(session.name)).stats
    windows = []
    t = t_start + 5
    while t + 30 <= time.monotonic():
        video = viewer.rx.lips(t, t + 30)
        audio = [(a, lv) for a, lv in viewer.rx.audio if t <= a < t + 30]
        off, corr = av_offset(video, audio)
        windows.append({"t": round(t - t_start), "offset_ms": round(off * 1000, 1), "corr": round(corr, 2)})
        t += 30
    frames = after.video_frames - before.video_frames
    samples = after.samples_played - before.samples_played
    await r.client.end_session(session.name)
    await viewer.aclose()
    return {
        "minutes": minutes,
        "windows": windows,
        "offset_first_ms": windows[0]["offset_ms"] if windows else None,
        "offset_last_ms": windows[-1]["offset_ms"] if windows else None,
        "publisher_frames": frames,
        "publisher_audio_s": samples / 24000,
        "frames_minus_audio_time_x_fps": frames - round(samples / 24000 * 30),
        "viewer_dropped_frames": viewer.rx.dropped_frames(30),
    }


async def _drain(stream: object) -> None:
    async for _ in stream:  # type: ignore[attr-defined]
        pass


async def main(args: argparse.Namespace) -> None:
    report: dict[str, object] = {}
    async with rig(not args.no_rtc_v1) as r:
        ff = await first_frames(r, args.sessions)
        report["first_frame_ms"] = {"n": len(ff), "p50": percentile(ff, 50) * 1000, "p95": percentile(ff, 95) * 1000,
                                    "max": max(ff) * 1000}
        print("time to first avatar frame (ms):", json.dumps(report["first_frame_ms"]), flush=True)
        for delay in sorted({0.0, args.video_delay}) if args.runs else ():
            runs = [await speech_run(r, delay, None, args.browser) for _ in range(args.runs)]
            key = f"offset_video_delay_{round(delay * 1000)}ms"
            for viewer_kind, prefix in (("sdk", ""), ("browser", "browser_"), ("browser webaudio tap", "webaudio_")):
                offs = [x[f"{prefix}offset_ms"] for x in runs if f"{prefix}offset_ms" in x]
                if not offs:
                    continue
                report[f"{key}_{viewer_kind}"] = {
                    "runs": [round(o, 1) for o in offs], "median": statistics.median(offs), "min": min(offs),
                    "max": max(offs), "correlation_min": min(x[f"{prefix}correlation"] for x in runs),
                    **({"frames_not_seen": [x["browser_frames_not_seen"] for x in runs]} if prefix == "browser_"
                       else {})}
                print(f"A/V offset at the {viewer_kind} viewer, video_delay {delay * 1000:.0f} ms:",
                      json.dumps(report[f"{key}_{viewer_kind}"]), flush=True)
        await r.gateway.metrics()  # a new window: the interrupts' own
        intr = [await speech_run(r, args.video_delay, 3.0) for _ in range(args.runs)]
        [figures] = await r.gateway.metrics()
        gw = figures["interrupt"] if intr else {}
        keys = ("count", "p50_us", "p99_us", "max_us")
        report["interrupt"] = {
            "gateway_clear_received_to_queues_cleared_us": {k: gw.get(k) for k in keys},
            "clear_sent_to_silence_at_viewer_ms": [round(x.get("clear_to_silence_at_viewer_ms", -1)) for x in intr],
            "clear_sent_to_mouth_closed_at_viewer_ms": [round(x.get("clear_to_mouth_closed_at_viewer_ms", -1))
                                                        for x in intr],
        }
        print("interrupt:", json.dumps(report["interrupt"]), flush=True)
        if args.drift_minutes > 0:
            report["drift"] = await drift(r, args.drift_minutes, args.video_delay)
            d = report["drift"]
            assert isinstance(d, dict)
            print("drift:", json.dumps({k: v for k, v in d.items() if k != "windows"}), flush=True)
            print("drift windows:", json.dumps(d["windows"]), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20, help="sessions for the first-frame figure")
    parser.add_argument("--runs", type=int, default=5, help="speech runs per A/V offset setting")
    parser.add_argument("--video-delay", type=float, default=0.0,
                        help="a video_delay to measure beside 0 (the default), seconds")
    parser.add_argument("--drift-minutes", type=float, default=10.0)
    parser.add_argument("--browser", action="store_true",
                        help="a headless Chromium viewer (viewer/browser) watches every A/V run beside the SDK viewer")
    parser.add_argument("--no-rtc-v1", action="store_true",
                        help="participants use the two-peer-connection /rtc signalling path")
    a = parser.parse_args()
    if (reason := not_in_namespace_reason()) is not None:
        sys.exit(f"av_sync: {reason}")
    asyncio.run(main(a))
