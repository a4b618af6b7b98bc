"""Gateway hop latency (audio chunk received -> handed to the provider) and gateway CPU under N concurrent streams.

Each stream sends 16 kHz mono speech in 20 ms chunks in real time, in 2 s segments, to its own mock session on the
real `avatar-gateway serve --headless`, with one worker process or several (`--gateway-workers`). The gateway's CPU
is read from /proc for all its processes; the hop histograms come from the gateway itself (each process logs its
metrics on SIGUSR1, gateway/metrics.py); the load comes from `--generators` separate processes
(bench/load_worker.py), each stream on its own connection unless `--per-connection` says otherwise, spread over
each 20 ms tick. All of it shares this machine's cores, so the load generators' CPU is reported too. The mock
plays audio at `--provider-rate` (16 kHz by default, like Simli: no resampling; 24000 makes the gateway resample
every chunk with PyAV) and renders small video (`--video`, default 64x48 at 10 fps) so the figures are about the
gateway, not about pixel pushing (bench/render_mock.py measures rendering). A stream is sustained when every chunk
offered is handled in real time: offered 100%, no late ticks, no underrun warnings. `split` is each worker's share
of the chunks: the kernel spreads connections, not streams, over the workers.

    .venv/bin/python -m bench.gateway_load --streams 1 100 500 --gateway-workers 1 2
    .venv/bin/python -m bench.gateway_load --streams 100 200 --provider-rate 24000
    .venv/bin/python -m bench.gateway_load --streams 100 --client agent_client
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from bench.gateway_cli import GatewayUnderTest
from bench.procstat import cpu_seconds, rss_mb


async def _spawn(*args: str, **kwargs: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", *args, **kwargs)  # type: ignore[arg-type]


async def run(streams: int, seconds: float, warmup: float, video: str, generators: int, gateway_workers: int,
              profile: str | None, client: str, provider_rate: int, per_connection: int) -> dict[str, object]:
    gateway = await GatewayUnderTest.start(gateway_workers)
    procs: list[asyncio.subprocess.Process] = []
    try:
        port = str(gateway.port)
        shares = [streams // generators + (1 if i < streams % generators else 0) for i in range(generators)]
        for i, share in enumerate(s for s in shares if s):
            procs.append(await _spawn("bench.load_worker", "--port", port, "--streams", str(share), "--seconds",
                                      str(warmup + seconds), "--warmup", str(warmup), "--video", video, "--tag", str(i),
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
        await gateway.metrics()  # the measurement window opens
        gateway_pids, load_pids = gateway.pids, [p.pid for p in procs]
        t0 = time.monotonic()
        cpu0 = [cpu_seconds(pid) for pid in gateway_pids + load_pids]
        spy = None
        if profile:
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(gateway.worker_pids[0]), "-d",
                str(int(seconds * 0.8)), "-r", "200", "-f", "raw", "-o", profile,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(seconds - 0.5)
        figures = await gateway.metrics()  # ... and closes
        wall = time.monotonic() - t0
        cpu = [(cpu_seconds(pid) - c) / wall for pid, c in zip(gateway_pids + load_pids, cpu0, strict=True)]
        rss = sum(rss_mb(pid) for pid in gateway_pids)
        reports = []
        for p in procs:
            assert p.stdout is not None
            reports.append(json.loads(await p.stdout.readline()))
            await p.wait()
        if spy is not None:
            await spy.wait()
        chunks = sum(int(f["chunks"]) for f in figures)
        window = max(float(f["window_s"]) for f in figures)
        late = sum(r["late_ticks"] for r in reports)
        ticks = sum(r["ticks"] for r in reports)
        return {
            "streams": streams,
            "gateway_workers": gateway_workers,
            "seconds": seconds,
            "chunks_per_s": chunks / window,
            "offered_fraction": chunks / (streams * 50 * window),
            "late_tick_fraction": late / ticks,
            # the load generators' own lateness: a chunk they send late reaches the provider late (an underrun
            # that is theirs, not the gateway's, once it nears the ~100 ms margin of the bench's prebuffer)
            "generator_max_late_ms": max(float(r["max_late_ms"]) for r in reports),
            # each worker's own histogram; the worst worker's percentiles
            "hop": {k: max(float(f["hop"][k]) for f in figures) for k in ("p50_us", "p99_us", "max_us")},
            "hop_per_worker": [f["hop"] for f in figures],
            # the latest a chunk reached the gateway's handler, against real time (gateway/metrics.py ArrivalClock)
            "arrival_lag_max_ms": max(float(f["arrival_lag"]["max_us"]) for f in figures) / 1000,
            "arrival_lag_p999_ms": max(float(f["arrival_lag"]["p999_us"]) for f in figures) / 1000,
            "loop_lag": {k: max(float(f["loop_lag"][k]) for f in figures) for k in ("p50_us", "p99_us", "max_us")},
            "gateway_cpu_cores": sum(cpu[: len(gateway_pids)]),
            "load_generator_cpu_cores": sum(cpu[len(gateway_pids):]),
            "gateway_rss_mb": rss,
            "segments_finished": sum(r["finished"] for r in reports),
            "stream_errors": sum(r["errors"] for r in reports),
            "underrun_warnings": sum(r["underruns"] for r in reports),
            "flow_control_waits": sum(r.get("blocked", 0) for r in reports),
        }
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await gateway.stop()


def _split(figures: dict[str, object]) -> str:
    """Each worker's share of the chunks, in percent: how evenly the kernel spread the connections."""
    per_worker = figures["hop_per_worker"]
    assert isinstance(per_worker, list)
    counts = [int(h["count"]) for h in per_worker]
    total = sum(counts) or 1
    return "/".join(f"{100 * c / total:.0f}" for c in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--generators", type=int, help="load-generator processes (default: 1 for h2, 2 for "
                        "agent_client)")
    parser.add_argument("--gateway-workers", type=int, nargs="+", default=[1],
                        help="run the table for each of these `avatar-gateway serve --workers` counts")
    parser.add_argument("--client", choices=("h2", "agent_client"), default="h2",
                        help="load generator's gRPC client (see bench/load_worker.py)")
    parser.add_argument("--provider-rate", type=int, default=16000, help="the mock's audio rate, Hz")
    parser.add_argument("--per-connection", type=int, default=1,
                        help="streams sharing one gRPC connection (default 1: every agent its own channel; N: an "
                             "agent server hosting N sessions on one channel)")
    parser.add_argument("--video", default="64x48@10", help="WxH@FPS of the mock avatar")
    parser.add_argument("--profile", help="record the gateway with py-spy (raw format) to this file")
    args = parser.parse_args()
    print(f"{'workers':>7} {'streams':>7} {'chunks/s':>9} {'offered':>7} {'hop p50':>9} {'hop p99':>9} {'hop max':>9} "
          f"{'gw CPU':>7} {'load CPU':>8} {'gw RSS':>7} {'underruns':>9} {'lag p99':>8} {'lag max':>8} "
          f"{'gen late':>8} {'in late':>8} split")
    generators = args.generators or (1 if args.client == "h2" else 2)
    for gw, n in ((gw, n) for gw in args.gateway_workers for n in args.streams):
        r = asyncio.run(run(n, args.seconds, args.warmup, args.video, min(generators, n), gw, args.profile,
                            args.client, args.provider_rate, args.per_connection))
        hop, lag = r["hop"], r["loop_lag"]
        assert isinstance(hop, dict) and isinstance(lag, dict)
        print(f"{gw:>7} {n:>7} {r['chunks_per_s']:>9.0f} {r['offered_fraction']:>7.1%} {hop['p50_us']:>7.0f}us "
              f"{hop['p99_us']:>7.0f}us {hop['max_us']:>7.0f}us {r['gateway_cpu_cores']:>6.0%} "
              f"{r['load_generator_cpu_cores']:>7.0%} {r['gateway_rss_mb']:>5.0f}MB {r['underrun_warnings']:>9} "
              f"{lag['p99_us'] / 1000:>6.1f}ms {lag['max_us'] / 1000:>6.1f}ms "
              f"{r['generator_max_late_ms']:>6.1f}ms {r['arrival_lag_max_ms']:>6.1f}ms {_split(r)}", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
