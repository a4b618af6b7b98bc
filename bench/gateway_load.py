"""Gateway hop latency (audio chunk received -> handed to the provider) and gateway CPU under N concurrent streams.

Each stream sends 16 kHz mono speech in 20 ms chunks in real time, in 2 s segments, to its own mock session on a
headless gateway. The gateway runs in its own process so its CPU is measured alone (from /proc); the hop histogram
comes from the gateway itself (gateway/metrics.py); the load comes from `--workers` separate processes
(bench/load_worker.py). All of it shares this machine's two cores, so the load generators' CPU is reported too.
The mock plays audio at `--provider-rate` (16 kHz by default, like Simli: no resampling; 24000 makes the gateway
resample every chunk with PyAV) and renders small video (`--video`, default 64x48 at 10 fps) so the figures are
about the gateway, not about pixel pushing (bench/render_mock.py measures rendering).

    .venv/bin/python -m bench.gateway_load --streams 1 100 500
    .venv/bin/python -m bench.gateway_load --streams 100 200 --provider-rate 24000
    .venv/bin/python -m bench.gateway_load --streams 100 --client agent_client
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.procstat import cpu_seconds, rss_mb


async def _spawn(*args: str, **kwargs: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", *args, **kwargs)  # type: ignore[arg-type]


async def run(streams: int, seconds: float, warmup: float, video: str, workers: int, profile: str | None,
              client: str, provider_rate: int, per_connection: int) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp())
    metrics_file = tmp / "metrics.json"
    with (tmp / "gateway.log").open("w") as log:
        gateway = await _spawn("bench.gateway_proc", "--metrics-file", str(metrics_file),
                               stdout=asyncio.subprocess.PIPE, stderr=log)
    procs: list[asyncio.subprocess.Process] = []
    try:
        assert gateway.stdout is not None
        async with asyncio.timeout(30):
            port = (await gateway.stdout.readline()).decode().strip()
        shares = [streams // workers + (1 if i < streams % workers else 0) for i in range(workers)]
        for i, share in enumerate(s for s in shares if s):
            procs.append(await _spawn("bench.load_worker", "--port", port, "--streams", str(share), "--seconds",
                                      str(warmup + seconds), "--video", video, "--tag", str(i),
                                      "--client", client, "--provider-rate", str(provider_rate),
                                      "--per-connection", str(per_connection),
                                      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))
        async with asyncio.timeout(300):
            for p in procs:
                assert p.stdout is not None
                line = await p.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"load worker failed to start: {line!r}")
        go = time.time() + 1.0
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"go {go}\n".encode())
            await p.stdin.drain()
        await asyncio.sleep(go + warmup - time.time())
        gateway.send_signal(signal.SIGUSR1)
        pids = [gateway.pid] + [p.pid for p in procs]
        t0, cpu0 = time.monotonic(), [cpu_seconds(pid) for pid in pids]
        spy = None
        if profile:
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(gateway.pid), "-d",
                str(int(seconds * 0.8)), "-r", "200", "-f", "raw", "-o", profile,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(seconds - 0.5)
        gateway.send_signal(signal.SIGUSR2)
        wall = time.monotonic() - t0
        cpu = [(cpu_seconds(pid) - c) / wall for pid, c in zip(pids, cpu0, strict=True)]
        rss = rss_mb(gateway.pid)
        reports = []
        for p in procs:
            assert p.stdout is not None
            reports.append(json.loads(await p.stdout.readline()))
            await p.wait()
        if spy is not None:
            await spy.wait()
        gateway.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            await gateway.wait()
        metrics = json.loads(metrics_file.read_text())
        late = sum(r["late_ticks"] for r in reports)
        ticks = sum(r["ticks"] for r in reports)
        return {
            "streams": streams,
            "seconds": seconds,
            "chunks_per_s": metrics["chunks"] / wall,
            "offered_fraction": metrics["chunks"] / (streams * 50 * wall),
            "late_tick_fraction": late / ticks,
            "hop": metrics["hop"],
            "gateway_cpu_cores": cpu[0],
            "load_generator_cpu_cores": sum(cpu[1:]),
            "gateway_rss_mb": rss,
            "segments_finished": sum(r["finished"] for r in reports),
            "stream_errors": sum(r["errors"] for r in reports),
            "underrun_warnings": sum(r["underruns"] for r in reports),
            "flow_control_waits": sum(r.get("blocked", 0) for r in reports),
        }
    finally:
        for p in [gateway, *procs]:
            if p.returncode is None:
                p.kill()
                await p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--workers", type=int, help="load-generator processes (default: 1 for h2, 2 for "
                        "agent_client)")
    parser.add_argument("--client", choices=("h2", "agent_client"), default="h2",
                        help="load generator's gRPC client (see bench/load_worker.py)")
    parser.add_argument("--provider-rate", type=int, default=16000, help="the mock's audio rate, Hz")
    parser.add_argument("--per-connection", type=int, default=50,
                        help="streams sharing one gRPC connection (an agent server process hosting many sessions)")
    parser.add_argument("--video", default="64x48@10", help="WxH@FPS of the mock avatar")
    parser.add_argument("--profile", help="record the gateway with py-spy (raw format) to this file")
    args = parser.parse_args()
    print(f"{'streams':>7} {'chunks/s':>9} {'offered':>7} {'hop p50':>9} {'hop p99':>9} {'hop max':>9} "
          f"{'gw CPU':>7} {'load CPU':>8} {'gw RSS':>7} {'underruns':>9}")
    for n in args.streams:
        workers = args.workers or (1 if args.client == "h2" else 2)
        r = asyncio.run(run(n, args.seconds, args.warmup, args.video, min(workers, n), args.profile, args.client,
                            args.provider_rate, args.per_connection))
        hop = r["hop"]
        assert isinstance(hop, dict)
        print(f"{n:>7} {r['chunks_per_s']:>9.0f} {r['offered_fraction']:>7.1%} {hop['p50_us']:>7.0f}us "
              f"{hop['p99_us']:>7.0f}us {hop['max_us']:>7.0f}us {r['gateway_cpu_cores']:>6.0%} "
              f"{r['load_generator_cpu_cores']:>7.0%} {r['gateway_rss_mb']:>5.0f}MB {r['underrun_warnings']:>9}",
              flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
