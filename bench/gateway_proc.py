"""A headless gateway process for benchmarks: prints its port; SIGUSR1 resets its metrics (the measurement window
opens), SIGUSR2 takes their snapshot (it closes); SIGTERM writes the snapshot as JSON and exits."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.server import GatewayServer


async def main(metrics_file: Path) -> None:
    server = GatewayServer(GatewayConfig(listen="127.0.0.1:0", headless=True, max_sessions=5000,
                                         shutdown_grace_s=0.0, default_idle_timeout_s=600))
    port = await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reset() -> None:
        server.manager.metrics = GatewayMetrics()
        for stream in server.service._streams:
            stream._metrics = server.manager.metrics

    snapshot: dict[str, object] = {}

    def take() -> None:
        m = server.manager.metrics
        snapshot.update(chunks=m.chunks, hop=m.hop.summary())

    loop.add_signal_handler(signal.SIGUSR1, reset)
    loop.add_signal_handler(signal.SIGUSR2, take)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(port, flush=True)
    await stop.wait()
    if not snapshot:
        take()
    await asyncio.to_thread(metrics_file.write_text, json.dumps(snapshot))
    await server.stop(0.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.metrics_file))
