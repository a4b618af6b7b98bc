"""The main job on the embedded default: everything on this machine, no external service, no API key.

Starts the loopback LiveKit-compatible development server (its own process, as livekit-server is), the gateway
process), a viewer participant that records exactly what a user would see and hear to an MP4 (H.264 + AAC), and the
example agent, which starts a mock avatar session and speaks a bundled clip with one interruption. Then prints a
report and writes a contact sheet PNG next to the MP4. Run it as `./run demo` (it needs the network namespace that
scripts/netns-run makes, because WebRTC ignores loopback interfaces).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from agent_client import AvatarGatewayClient, PlaybackFinished, PlaybackStarted
from examples.agent import converse
from loopback import not_in_namespace_reason
from loopback.process import LoopbackProcess
from viewer.browser import BrowserViewer
from viewer.contact_sheet import contact_sheet
from viewer.mp4 import Mp4Writer
from viewer.participant import Viewer
from viewer.sync import av_offset, envelope_level

ROOM = "demo"
AGENT = "agent-1"
API_KEY = "devkey"
VOICED = 0.3  # a 10 ms chunk with at least this envelope level is voice (the mock's mouth is well open there)
INTERRUPT_WINDOW_S = 0.5  # frame gaps this soon after clear_buffer was sent are the frames it discarded


async def start_gateway(lk: LoopbackProcess) -> tuple[asyncio.subprocess.Process, int]:
    """`avatar-gateway serve` as its own process, configured through the environment like a deployment."""
    env = dict(os.environ, LIVEKIT_URL=lk.url, LIVEKIT_API_KEY=lk.api_key, LIVEKIT_API_SECRET=lk.api_secret)
    port_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"avatar-gateway-{os.getpid()}.port"
    port_file.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
        "--shutdown-grace", "2", env=env)
    async with asyncio.timeout(30):
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.returncode is not None:
                raise RuntimeError("the gateway exited during start-up")
            await asyncio.sleep(0.05)
    port = int(port_file.read_text())
    port_file.unlink()
    return proc, port


async def demo(out: Path, provider: str, web: bool = False) -> int:
    mp4_path, sheet_path = out / "avatar.mp4", out / "avatar-contact-sheet.png"
    async with LoopbackProcess.start(api_key=API_KEY) as lk:
        print(f"loopback LiveKit development server: {lk.url}")
        gateway, port = await start_gateway(lk)
        print(f"gateway: 127.0.0.1:{port} (pid {gateway.pid})")
        recorder = Mp4Writer(mp4_path, 640, 480, 30)
        viewer: Viewer | None = None
        page: BrowserViewer | None = None
        try:
            async with AvatarGatewayClient(f"127.0.0.1:{port}") as client:
                t_start = time.monotonic()
                # the recording's size: a provider with another aspect (Simli's square faces) is fitted into it
                session = await client.start_session(provider, room_name=ROOM, agent_identity=AGENT, width=640,
                                                     height=480, fps=30)
                t_active = time.monotonic()
                print(f"session {session.name}: avatar {session.avatar_identity} ACTIVE after "
                      f"{(t_active - t_start) * 1000:.0f} ms")
                viewer = Viewer(lk.url, lk.token("viewer", ROOM), avatar_identity=session.avatar_identity,
                                recorder=recorder)
                await viewer.join()
                async with asyncio.timeout(15):
                    await viewer.wait_tracks()
                    await viewer.first_frame.wait()
                assert viewer.first_video_at is not None
                if web:  # the same avatar in headless Chromium (livekit-client), watched beside the SDK viewer
                    page = BrowserViewer(lk.url, lk.token("browser", ROOM), avatar_identity=session.avatar_identity)
                    await page.open()
                    await page.wait_until(lambda: page.first_video_at is not None and len(page.rx.audio) >= 50, 30)
                    print("browser viewer (headless Chromium, livekit-client): receiving the avatar")
                print("viewer: receiving avatar_audio + avatar_video; the agent speaks:")
                timeline = await converse(client, session.name)
                ended = await client.end_session(session.name)
                async with asyncio.timeout(15):
                    await viewer.avatar_left.wait()
                print(f"session ended ({ended.end_detail}); the avatar left the room")
            if page is not None:
                await page.wait_until(lambda: page.avatar_left.is_set(), 15)
        finally:
            if page is not None:
                await page.aclose()
            if viewer is not None:
                await viewer.aclose()
            await asyncio.to_thread(recorder.close)
            if gateway.returncode is None:
                gateway.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    await gateway.wait()
        leftovers = await lk.participants(ROOM)
    rx = viewer.rx
    first_frame_ms = (viewer.first_video_at - t_start) * 1000
    report = {"time to first avatar frame at the viewer (from StartSession)": f"{first_frame_ms:.0f} ms"}
    offset, corr = av_offset(rx.lips(), rx.audio)
    report["A/V offset at the viewer (+ = video late)"] = f"{offset * 1000:+.0f} ms (correlation {corr:.2f})"
    if page is not None:
        b_offset, b_corr = av_offset(page.rx.lips(), page.rx.audio)
        w_offset, w_corr = av_offset(page.rx.lips(), page.webaudio)
        report["A/V offset in the browser (rendered frames, audio element)"] = \
            f"{b_offset * 1000:+.0f} ms (correlation {b_corr:.2f}); {page.dropped_frames} frames not seen"
        report["A/V offset in the browser through a WebAudio tap"] = \
            f"{w_offset * 1000:+.0f} ms (correlation {w_corr:.2f})"
    first_voice = next((t for t, lv in rx.audio if t > timeline.first_send and lv > 0.3), None)
    first_lips = next((v.shown for v in rx.video if v.shown > timeline.first_send and v.opening > 0.3), None)
    if first_voice is not None and first_lips is not None:
        report["audio sent -> voice heard at the viewer"] = f"{(first_voice - timeline.first_send) * 1000:.0f} ms"
        report["audio sent -> lips moving at the viewer"] = f"{(first_lips - timeline.first_send) * 1000:.0f} ms"
    rate = 16000  # the clip's
    fps = 30
    span = rx.video[-1].t - rx.video[0].t if rx.video else 0.0
    report["video frames received"] = f"{len(rx.video)} over {span:.1f} s ({len(rx.video) / max(span, 1e-9):.1f} fps)"
    # an interrupt discards the video frames queued with the stale audio: their timestamps are skipped, not dropped
    interrupt = timeline.interrupt_sent
    gaps = rx.frame_gaps(fps)
    at_interrupt = sum(n for t, n in gaps if interrupt and interrupt <= t <= interrupt + INTERRUPT_WINDOW_S)
    report["dropped frames"] = str(sum(n for _, n in gaps) - at_interrupt)
    report["stale frames discarded at the interrupt"] = str(at_interrupt)
    starts = [e for _, e in timeline.events if isinstance(e, PlaybackStarted)]
    finishes = [e for _, e in timeline.events if isinstance(e, PlaybackFinished)]
    report["audio received"] = f"{rx.audio_samples / 48000:.1f} s (from subscription to leaving)"
    # what was sent against what was heard: the voiced 10 ms of each segment up to where it was heard, against the
    # voiced 10 ms at the viewer
    expected = sum(_voiced_s(pcm[: round(f.position * rate)], rate) for pcm, f in zip(timeline.sent, finishes,
                                                                                      strict=False))
    received_voice = sum(0.01 for _, level in rx.audio if level >= VOICED)
    report["speech: sent, heard, voiced at the viewer"] = (
        f"{sum(p.size for p in timeline.sent) / rate:.2f} s sent, {sum(f.position for f in finishes):.2f} s heard "
        f"(playback positions); voice in {received_voice:.2f} s at the viewer for {expected:.2f} s voiced in what "
        f"was heard")
    report["playback events"] = f"{len(starts)} started, {len(finishes)} finished: " + ", ".join(
        f"#{f.segment_id} {f.position:.2f}s{' interrupted' if f.interrupted else ''}" for f in finishes)
    stills = [(d, w, h) for t, d, w, h in rx.stills if timeline.first_send <= t][::2][:12]
    if stills:
        contact_sheet(stills, sheet_path)
    report["recording"] = f"{mp4_path} ({mp4_path.stat().st_size / 1e6:.1f} MB, H.264 + AAC)"
    report["contact sheet"] = str(sheet_path) if stills else "(no frames)"
    report["left on the LiveKit server"] = "nothing" if not leftovers else str(list(leftovers))
    width = max(len(k) for k in report)
    print("\nreport")
    for key, value in report.items():
        print(f"  {key:<{width}}  {value}")
    ok = len(finishes) == 2 and finishes[0].interrupted and not finishes[1].interrupted and not leftovers
    return 0 if ok else 1


def _voiced_s(pcm: np.ndarray, rate: int) -> float:
    """Seconds of `pcm` in 10 ms chunks loud enough to count as voice (envelope_level >= VOICED)."""
    step = rate // 100
    return 0.01 * sum(envelope_level(pcm[i : i + step]) >= VOICED for i in range(0, pcm.size - step + 1, step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the MP4 and the contact sheet")
    parser.add_argument("--provider", choices=("mock", "simli"), default="mock",
                        help="the avatar: the mock (default, no external service) or Simli (needs SIMLI_API_KEY and "
                             "SIMLI_FACE_ID)")
    parser.add_argument("--web", action="store_true",
                        help="also watch in headless Chromium (livekit-client, viewer/browser); report what it shows")
    args = parser.parse_args()
    reason = not_in_namespace_reason()
    if reason is not None:
        sys.exit(f"demo: {reason} (run it as ./run demo)")
    if args.provider == "simli" and not (os.environ.get("SIMLI_API_KEY") and os.environ.get("SIMLI_FACE_ID")):
        sys.exit("demo: --provider simli needs SIMLI_API_KEY and SIMLI_FACE_ID in the environment")
    args.out.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(demo(args.out, args.provider, args.web)))


if __name__ == "__main__":
    main()
