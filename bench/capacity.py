"""How many concurrent mock sessions at 640x480@30 one gateway process sustains with no dropped frames.

The gateway runs as its own process (`avatar-gateway serve`, CPU read from /proc); each session's avatar joins the
loopback development server (in this process, so it can count the frames it receives per track) and speaks
continuously. For each N the window's figures are: frames the server received per session per second (30 = none
dropped; the server counts a frame when its last RTP packet arrives), the gateway's own frame counter, and the
gateway's CPU. Both share this machine's 2 cores with the development server, which forwards every published
track (bench/forwarding_cost.py measures what that costs it).

Run inside the network namespace: scripts/netns-run .venv/bin/python -m bench.capacity --sessions 1 2 4 6 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

from agent_client import AudioStream, AvatarGatewayClient
from bench.procstat import cpu_seconds
from bench.speaker import talk_until
from loopback import LoopbackServer, loopback_host, not_in_namespace_reason

FPS = 30


async def _drain(stream: AudioStream) -> None:
    async for _ in stream:
        pass


async def measure(n: int, window: float) -> dict[str, object]:
    secret = secrets.token_urlsafe(32)
    async with LoopbackServer(loopback_host(), 0, "capkey", secret) as lk:
        port_file = Path(tempfile.mkdtemp()) / "port"
        env = dict(os.environ, LIVEKIT_URL=lk.url, LIVEKIT_API_KEY="capkey", LIVEKIT_API_SECRET=secret)
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
            "--shutdown-grace", "0", "--log-level", "warning", env=env)
        try:
            async with asyncio.timeout(30):
                while not port_file.exists() or not port_file.read_text().strip():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            async with AvatarGatewayClient(f"127.0.0.1:{port_file.read_text().strip()}", timeout=60) as client:
                sessions = [await client.start_session("mock", room_name=f"cap-{i}", agent_identity=f"agent-{i}")
                            for i in range(n)]
                streams = [await client.stream_audio(s.name, sample_rate=16000).open() for s in sessions]
                stop = asyncio.Event()
                talkers = [asyncio.create_task(talk_until(s, stop)) for s in streams]
                readers = [asyncio.create_task(_drain(s)) for s in streams]
                await asyncio.sleep(5)  # warm-up: encoders settle

                def received() -> list[int]:
                    st = lk.state()
                    out = []
                    for i, s in enumerate(sessions):
                        p = st.participant(f"cap-{i}", s.avatar_identity)
                        out.append(sum(t.frames_received for t in p.tracks.values() if t.kind == "video") if p else 0)
                    return out

                async def produced() -> list[int]:
                    return [(await client.get_session(s.name)).stats.video_frames for s in sessions]

                r0, p0, t0 = received(), await produced(), time.monotonic()
                g0, b0 = cpu_seconds(gateway.pid), cpu_seconds(os.getpid())
                await asyncio.sleep(window)
                r1, p1, t1 = received(), await produced(), time.monotonic()
                g1, b1 = cpu_seconds(gateway.pid), cpu_seconds(os.getpid())
                stop.set()
                await asyncio.gather(*talkers, return_exceptions=True)
                for stream in streams:
                    stream.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                for session in sessions:
                    await client.end_session(session.name)
            wall = t1 - t0
            rx_fps = [(b - a) / wall for a, b in zip(r0, r1, strict=True)]
            expected = round(wall * FPS)
            # one frame of slack for where the window's edges fall between frames
            dropped = [max(0, expected - (b - a) - 1) for a, b in zip(r0, r1, strict=True)]
            tx_fps = [(b - a) / wall for a, b in zip(p0, p1, strict=True)]
            gw_cpu = (g1 - g0) / wall
            return {
                "sessions": n,
                "server_rx_fps_min": min(rx_fps),
                "server_rx_fps_mean": sum(rx_fps) / n,
                "gateway_fps_min": min(tx_fps),
                "window_s": wall,
                "frames_expected_per_session": expected,
                "dropped_frames_max": max(dropped),
                "gateway_cpu_cores": gw_cpu,
                "gateway_cpu_per_session": gw_cpu / n,
                "dev_server_cpu_cores": (b1 - b0) / wall,
            }
        finally:
            if gateway.returncode is None:
                gateway.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(20):
                        await gateway.wait()
                except TimeoutError:
                    gateway.kill()
                    await gateway.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 6, 8])
    parser.add_argument("--window", type=float, default=15.0)
    args = parser.parse_args()
    if (reason := not_in_namespace_reason()) is not None:
        sys.exit(f"capacity: {reason}")
    print(f"{'sessions':>8} {'rx fps min':>10} {'dropped':>7} {'gw fps min':>10} {'gw CPU':>7} {'CPU/session':>11} "
          f"{'dev server':>10}")
    for n in args.sessions:
        r = asyncio.run(measure(n, args.window))
        print(f"{n:>8} {r['server_rx_fps_min']:>10.1f} {r['dropped_frames_max']:>7} {r['gateway_fps_min']:>10.1f} "
              f"{r['gateway_cpu_cores']:>6.0%} "
              f"{r['gateway_cpu_per_session']:>10.1%} {r['dev_server_cpu_cores']:>9.0%}", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
