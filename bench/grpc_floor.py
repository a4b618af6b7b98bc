"""The transport floor under bench.gateway_load: the same streams against a StreamAudio that does nothing.

A sink server implements only `avatar.v1.AvatarProvider/StreamAudio` on grpc.aio and discards every message; load
generators (separate processes) open N streams and write one 20 ms chunk of 16 kHz mono PCM per stream every 20 ms,
as serialized `StreamAudioRequest`s built once. It shows what receiving a chunk costs grpc.aio before the gateway
does any work, and (`--client grpc`) what sending one costs a Python agent on grpc.aio, against bench/h2_client.py
(`--client h2`, the default), which frames a tick's messages for a whole connection into one write.

    .venv/bin/python -m bench.grpc_floor --streams 100 300 500
    .venv/bin/python -m bench.grpc_floor --streams 100 300 --client grpc
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator

import grpc
from avatar.v1 import audio_stream_pb2 as pb
from avatar.v1 import avatar_provider_pb2_grpc as pb_grpc
from avatar.v1 import session_pb2

from bench.h2_client import H2Connection, grpc_message
from bench.procstat import cpu_seconds
from bench.ticks import PHASES, Ticker, by_phase

RATE = 16000
CHUNK_BYTES = RATE // 50 * 2
METHOD = "/avatar.v1.AvatarProvider/StreamAudio"


class _Sink(pb_grpc.AvatarProviderServicer):
    def __init__(self) -> None:
        self.messages = 0

    async def StreamAudio(
        self, request_iterator: AsyncIterator[pb.StreamAudioRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamAudioResponse]:
        async for _ in request_iterator:
            self.messages += 1
        return
        yield


async def serve() -> None:
    sink = _Sink()
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 4096)])
    pb_grpc.add_AvatarProviderServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    marks: list[tuple[float, int]] = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: marks.append((time.monotonic(), sink.messages)))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(port, flush=True)
    await stop.wait()
    (t0, m0), (t1, m1) = marks[0], marks[-1]
    print(json.dumps({"messages_per_s": (m1 - m0) / (t1 - t0)}), flush=True)
    await server.stop(0)


async def generate_h2(port: int, streams: int, seconds: float, per_connection: int) -> None:
    conns = [await H2Connection.connect("127.0.0.1", port) for _ in range(-(-streams // per_connection))]
    calls = [(conns[i // per_connection], conns[i // per_connection].open(METHOD, lambda _: None))
             for i in range(streams)]
    config = grpc_message(pb.StreamAudioRequest(config=pb.StreamAudioConfig(
        session="sessions/floor", format=session_pb2.AudioFormat(sample_rate_hz=RATE, channels=1)
    )).SerializeToString())
    chunk = grpc_message(pb.StreamAudioRequest(audio=pb.AudioChunk(pcm=bytes(CHUNK_BYTES))).SerializeToString())
    for conn, call in calls:
        conn.send(call, config)
        conn.flush()
    phases = by_phase(calls)
    ticker = Ticker(int(seconds * 50), PHASES)
    async for _, phase in ticker.run():
        group, used = phases[phase]
        for conn, call in group:
            conn.send(call, chunk)
        for conn in used:
            conn.flush()
    for conn, call in calls:
        conn.reset(call)
    for conn in conns:
        conn.flush()
        conn.close()
    print(json.dumps({"late_ticks": ticker.late, "ticks": ticker.ticks * PHASES}), flush=True)


async def generate_grpc(port: int, streams: int, seconds: float, per_connection: int) -> None:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(-(-streams // per_connection))]
    # raw bytes in, no serializer: the cheapest write grpc.aio offers
    calls = [channels[i // per_connection].stream_stream(METHOD)() for i in range(streams)]
    config = pb.StreamAudioRequest(config=pb.StreamAudioConfig(
        session="sessions/floor", format=session_pb2.AudioFormat(sample_rate_hz=RATE, channels=1)))
    for call in calls:
        await call.write(config.SerializeToString())
    chunk = pb.StreamAudioRequest(audio=pb.AudioChunk(pcm=bytes(CHUNK_BYTES))).SerializeToString()
    groups = [calls[p::PHASES] for p in range(PHASES)]
    ticker = Ticker(int(seconds * 50), PHASES)
    async for _, phase in ticker.run():
        await asyncio.gather(*(call.write(chunk) for call in groups[phase]))
    for call in calls:
        call.cancel()
    for ch in channels:
        await ch.close()
    print(json.dumps({"late_ticks": ticker.late, "ticks": ticker.ticks * PHASES}), flush=True)


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.grpc_floor", *args,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def run(streams: int, seconds: float, workers: int, client: str, per_connection: int) -> dict[str, float]:
    server = await _spawn("--role", "server")
    procs: list[asyncio.subprocess.Process] = []
    try:
        assert server.stdout is not None
        port = (await server.stdout.readline()).decode().strip()
        shares = [streams // workers + (1 if i < streams % workers else 0) for i in range(workers)]
        for share in shares:
            procs.append(await _spawn("--role", "client", "--client", client, "--port", port, "--streams",
                                      str(share), "--seconds", str(seconds + 3), "--per-connection",
                                      str(per_connection)))
        for p in procs:
            assert p.stdout is not None
            if (await p.stdout.readline()).strip() != b"ready":
                raise RuntimeError("load generator failed to start")
        go = time.time() + 0.5
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"go {go}\n".encode())
            await p.stdin.drain()
        await asyncio.sleep(go + 2 - time.time())  # warm-up
        pids = [server.pid] + [p.pid for p in procs]
        server.send_signal(signal.SIGUSR1)
        t0, cpu0 = time.monotonic(), [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(seconds - 1)
        server.send_signal(signal.SIGUSR1)
        wall = time.monotonic() - t0
        cpu = [(cpu_seconds(pid) - c) / wall for pid, c in zip(pids, cpu0, strict=True)]
        reports = []
        for p in procs:
            assert p.stdout is not None
            reports.append(json.loads(await p.stdout.readline()))
            await p.wait()
        server.send_signal(signal.SIGTERM)
        assert server.stdout is not None
        received = json.loads(await server.stdout.readline())["messages_per_s"]
        await server.wait()
        return {
            "streams": streams,
            "messages_per_s": received,
            "offered_fraction": received / (streams * 50),
            "late_tick_fraction": sum(r["late_ticks"] for r in reports) / sum(r["ticks"] for r in reports),
            "sink_cpu_cores": cpu[0],
            "generator_cpu_cores": sum(cpu[1:]),
            "sink_us_per_message": cpu[0] / received * 1e6,
            "generator_us_per_message": sum(cpu[1:]) / received * 1e6,
        }
    finally:
        for p in [server, *procs]:
            if p.returncode is None:
                p.kill()
                await p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("bench", "server", "client"), default="bench")
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, help="load-generator processes (default: 1 for h2, 2 for grpc)")
    parser.add_argument("--client", choices=("h2", "grpc"), default="h2", help="the load generators' client")
    parser.add_argument("--per-connection", type=int, default=50, help="streams sharing one connection")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(serve())
        return
    if args.role == "client":
        generate = generate_h2 if args.client == "h2" else generate_grpc
        asyncio.run(generate(args.port, args.streams[0], args.seconds, args.per_connection))
        return
    print(f"{'streams':>7} {'msgs/s':>7} {'offered':>7} {'late':>6} {'sink CPU':>8} {'gen CPU':>8} "
          f"{'sink us/msg':>11} {'gen us/msg':>10}")
    for n in args.streams:
        workers = args.workers or (1 if args.client == "h2" else 2)
        r = asyncio.run(run(n, args.seconds, min(workers, n), args.client, args.per_connection))
        print(f"{n:>7} {r['messages_per_s']:>7.0f} {r['offered_fraction']:>7.1%} {r['late_tick_fraction']:>6.1%} "
              f"{r['sink_cpu_cores']:>8.0%} {r['generator_cpu_cores']:>8.0%} {r['sink_us_per_message']:>11.1f} "
              f"{r['generator_us_per_message']:>10.1f}", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
