"""Gateway hop latency (audio chunk received -> handed to the provider) and gateway CPU under N concurrent streams.

Each stream sends 16 kHz mono speech in 20 ms chunks in real time, in 2 s segments, to its own mock session. The
gateway runs in its own process so its CPU is measured alone (from /proc); the hop histogram comes from the gateway
itself. The mock renders small video here (64x48 at 10 fps, `--video`) so the figure is about the gateway, not
about pixel pushing; see bench/capacity.py for full-size video.

    .venv/bin/python -m bench.gateway_load --streams 1 100 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from agent_client import AudioStream, AvatarGatewayClient

RATE = 16000
CHUNK = RATE // 50  # 20 ms


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _drain(stream: AudioStream, finished: list[int]) -> None:
    async for ev in stream:
        if type(ev).__name__ == "PlaybackFinished":
            finished.append(1)


async def run(streams: int, seconds: float, warmup: float, video: tuple[int, int, int], profile: str | None = None
              ) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp())
    port_file, metrics_file = tmp / "port", tmp / "metrics.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.gateway_proc", "--port-file", str(port_file), "--metrics-file",
        str(metrics_file), stdout=asyncio.subprocess.DEVNULL, stderr=open(tmp / "stderr", "w"))
    try:
        async with asyncio.timeout(30):
            while not port_file.exists() or not port_file.read_text().strip():
                await asyncio.sleep(0.05)
        port = int(port_file.read_text())
        clients = [AvatarGatewayClient(f"127.0.0.1:{port}", timeout=60) for _ in range(4)]
        names: list[str] = []
        for i in range(streams):
            s = await clients[i % 4].start_session("mock", room_name="bench", agent_identity=f"agent-{i}",
                                                   width=video[0], height=video[1], fps=video[2])
            names.append(s.name)
        opened = [await clients[i % 4].stream_audio(n, sample_rate=RATE).open() for i, n in enumerate(names)]
        finished: list[int] = []
        readers = [asyncio.create_task(_drain(s, finished)) for s in opened]
        t = np.arange(RATE * 2) / RATE
        segment = (np.sin(2 * np.pi * 150 * t) * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)) * 8000).astype("<i2")
        pieces = [segment[i : i + CHUNK].tobytes() for i in range(0, segment.size, CHUNK)]
        total_ticks = int((warmup + seconds) * 50)
        start = time.monotonic()
        late_ticks = 0
        window: dict[str, float] = {}
        for tick in range(total_ticks):
            due = start + tick * 0.02
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.02:
                late_ticks += 1
            if tick == int(warmup * 50):
                proc.send_signal(signal.SIGUSR1)
                window = {"t": time.monotonic(), "cpu": _cpu_seconds(proc.pid)}
                if profile:
                    spy = await asyncio.create_subprocess_exec(
                        str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(proc.pid), "-d",
                        str(int(seconds * 0.8)), "-r", "200", "-f", "raw", "-o", profile,
                        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            piece = pieces[tick % len(pieces)]
            await asyncio.gather(*(s.send(piece) for s in opened))
            if tick % len(pieces) == len(pieces) - 1:
                await asyncio.gather(*(s.end_segment() for s in opened))
        wall = time.monotonic() - window["t"]
        if profile:
            await spy.wait()
        cpu = (_cpu_seconds(proc.pid) - window["cpu"]) / wall
        rss = _rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        for s in opened:
            s.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for c in clients:
            await c.close()
        async with asyncio.timeout(60):
            await proc.wait()
        metrics = json.loads(metrics_file.read_text())
        expected = streams * seconds * 50
        return {
            "streams": streams,
            "seconds": seconds,
            "chunks_per_s": metrics["chunks"] / wall,
            "offered_fraction": metrics["chunks"] / expected,
            "late_ticks": late_ticks,
            "hop": metrics["hop"],
            "gateway_cpu_cores": cpu,
            "gateway_rss_mb": rss,
            "segments_finished": len(finished),
        }
    finally:
        if proc.returncode is None:
            print((tmp / "stderr").read_text()[-3000:], file=sys.stderr)
            proc.kill()
            await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--video", default="64x48@10", help="WxH@FPS of the mock avatar")
    parser.add_argument("--profile", help="record the gateway with py-spy (raw format) to this file")
    args = parser.parse_args()
    size, fps = args.video.split("@")
    w, h = size.split("x")
    video = (int(w), int(h), int(fps))
    print(f"{'streams':>7} {'chunks/s':>9} {'offered':>7} {'hop p50':>9} {'hop p99':>9} {'hop max':>9} "
          f"{'gw CPU':>7} {'gw RSS':>7}")
    for n in args.streams:
        r = asyncio.run(run(n, args.seconds, args.warmup, video, args.profile))
        hop = r["hop"]
        assert isinstance(hop, dict)
        print(f"{n:>7} {r['chunks_per_s']:>9.0f} {r['offered_fraction']:>7.1%} {hop['p50_us']:>7.0f}us "
              f"{hop['p99_us']:>7.0f}us {hop['max_us']:>7.0f}us {r['gateway_cpu_cores']:>6.0%} "
              f"{r['gateway_rss_mb']:>5.0f}MB", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
