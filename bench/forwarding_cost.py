"""What the loopback development server costs per forwarded track: the CPU of its own process (from /proc) while one
mock avatar session publishes 640x480@30 video and 48 kHz audio into a room and N viewers subscribe to both tracks.

The server runs on its own (`python -m loopback`), from this tree or from another one (`--loopback-src DIR`, e.g. an
older commit exported with `git archive`, to compare); the gateway is its own process too; the viewers (real
livekit SDK, every received frame consumed) run in this one. Per N: the server's CPU over the window, the frames per
second each viewer got, and what each forwarded track adds over the publisher alone (N = 0).

Run inside the network namespace:
    scripts/netns-run .venv/bin/python -m bench.forwarding_cost --subscribers 0 1 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from livekit import api, rtc

from agent_client import AudioStream, AvatarGatewayClient
from bench.processes import free_port
from bench.procstat import cpu_seconds
from bench.speaker import talk_until
from loopback import loopback_host, not_in_namespace_reason
from loopback.process import stop_process

ROOT = Path(__file__).resolve().parents[1]
KEY = "fwdkey"
ROOM = "forwarding"


class Viewer:
    """A subscriber that consumes every frame of every track it receives, counting video frames."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.video_frames = 0
        self.audio_frames = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.room.on("track_subscribed", self._on_track)

    def _on_track(self, track: rtc.Track, *_: object) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: rtc.Track) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            async for _ in rtc.VideoStream(track):
                self.video_frames += 1
        else:
            async for _ in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
                self.audio_frames += 1

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()


async def measure(subscribers: int, window: float, loopback_src: Path) -> dict[str, object]:
    host, secret = loopback_host(), secrets.token_urlsafe(32)
    port = free_port(host)
    url = f"ws://{host}:{port}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loopback", "--host", host, "--port", str(port), "--api-key", KEY,
        "--log-level", "WARNING", cwd=loopback_src, stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, LIVEKIT_API_SECRET=secret, PYTHONPATH=f"{loopback_src}{os.pathsep}{ROOT}"))
    gateway: asyncio.subprocess.Process | None = None
    viewers: list[Viewer] = []
    try:
        assert server.stdout is not None
        async with asyncio.timeout(30):
            banner = (await server.stdout.readline()).decode()
        if url not in banner:
            raise RuntimeError(f"loopback server did not start: {banner!r}")
        port_file = Path(tempfile.mkdtemp()) / "port"
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
            "--shutdown-grace", "0", "--log-level", "warning", cwd=ROOT,
            env=dict(os.environ, LIVEKIT_URL=url, LIVEKIT_API_KEY=KEY, LIVEKIT_API_SECRET=secret))
        async with asyncio.timeout(30):
            while not port_file.exists() or not port_file.read_text().strip():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        for i in range(subscribers):
            viewer = Viewer()
            token = (api.AccessToken(KEY, secret).with_identity(f"viewer-{i}")
                     .with_grants(api.VideoGrants(room_join=True, room=ROOM)).to_jwt())
            await viewer.room.connect(url, token)
            viewers.append(viewer)
        async with AvatarGatewayClient(f"127.0.0.1:{port_file.read_text().strip()}", timeout=60) as client:
            session = await client.start_session("mock", room_name=ROOM, agent_identity="agent",
                                                 provider_options={"sample_rate": "48000"})
            stream = await client.stream_audio(session.name, sample_rate=48000).open()
            stop = asyncio.Event()
            talker = asyncio.create_task(talk_until(stream, stop))
            drain = asyncio.create_task(_drain(stream))
            await asyncio.sleep(5)  # warm-up: connections up, encoders settled
            v0, c0, t0 = [v.video_frames for v in viewers], cpu_seconds(server.pid), time.monotonic()
            await asyncio.sleep(window)
            v1, c1, t1 = [v.video_frames for v in viewers], cpu_seconds(server.pid), time.monotonic()
            stop.set()
            await talker
            stream.cancel()
            await asyncio.gather(drain, return_exceptions=True)
            await client.end_session(session.name)
        wall = t1 - t0
        fps = [(b - a) / wall for a, b in zip(v0, v1, strict=True)]
        return {
            "subscribers": subscribers,
            "forwarded_tracks": 2 * subscribers,
            "window_s": wall,
            "server_cpu_cores": (c1 - c0) / wall,
            "viewer_fps_min": min(fps) if fps else None,
            "loopback_src": str(loopback_src),
        }
    finally:
        for viewer in viewers:
            with contextlib.suppress(Exception):
                await viewer.aclose()
        if gateway is not None:
            await stop_process(gateway)
        await stop_process(server)


async def _drain(stream: AudioStream) -> None:
    async for _ in stream:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[0, 1, 4])
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--loopback-src", type=Path, default=ROOT,
                        help="the source tree whose loopback/ package runs the server (default: this one)")
    args = parser.parse_args()
    if (reason := not_in_namespace_reason()) is not None:
        sys.exit(f"forwarding_cost: {reason}")
    src = args.loopback_src.resolve()
    print(f"loopback server from {src}")
    print(f"{'subscribers':>11} {'server CPU':>10} {'per forwarded track':>19} {'viewer fps min':>14}")
    base: float | None = None
    for n in args.subscribers:
        r = asyncio.run(measure(n, args.window, src))
        cpu = float(r["server_cpu_cores"])  # type: ignore[arg-type]
        if n == 0:
            base = cpu
        per_track = f"{(cpu - base) / (2 * n):.1%}" if base is not None and n else "-"
        fps = f"{r['viewer_fps_min']:.1f}" if r["viewer_fps_min"] is not None else "-"
        print(f"{n:>11} {cpu:>10.1%} {per_track:>19} {fps:>14}", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
