"""The real `avatar-gateway serve` (JSON logs; headless unless given a LiveKit server) as a benchmark's subject: its
port, its processes, and the metrics every gateway process logs on SIGUSR1 (gateway.cli)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench.procstat import children

START_TIMEOUT_S = 120.0


class GatewayUnderTest:
    """A gateway of `workers` processes: headless, or in the rooms of the LiveKit server `livekit` names
    (url, api key, api secret; the secret goes through the environment, never the command line)."""

    def __init__(self, proc: asyncio.subprocess.Process, workers: int) -> None:
        self.proc = proc
        self.workers = workers
        self.port = 0
        self._records: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="gateway-log")

    @classmethod
    async def start(cls, workers: int = 1, *extra: str, livekit: tuple[str, str, str] | None = None
                    ) -> GatewayUnderTest:
        exe = Path(sys.executable).with_name("avatar-gateway")
        env = dict(os.environ)
        if livekit is None:
            extra = ("--headless", *extra)
        else:
            env.update(LIVEKIT_URL=livekit[0], LIVEKIT_API_KEY=livekit[1], LIVEKIT_API_SECRET=livekit[2])
        proc = await asyncio.create_subprocess_exec(
            str(exe), "serve", "--listen", "127.0.0.1:0", "--log-json", "--workers", str(workers),
            "--max-sessions", "100000", "--idle-timeout", "3600", "--shutdown-grace", "0", *extra, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        gateway = cls(proc, workers)
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                record = await gateway._record()
                msg = str(record.get("msg", ""))
                if msg.startswith("gateway listening on port") and "worker" not in record:
                    gateway.port = int(msg.split()[4])
                    return gateway

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            with contextlib.suppress(ValueError):
                self._records.put_nowait(json.loads(raw))
        self._records.put_nowait({"msg": "exited"})

    async def _record(self) -> dict[str, Any]:
        record = await self._records.get()
        if record.get("msg") == "exited":
            raise RuntimeError(f"the gateway exited with status {await self.proc.wait()}")
        return record

    @property
    def pids(self) -> list[int]:
        """Every process of the gateway (the supervisor and its workers, or the one process)."""
        return [self.proc.pid, *children(self.proc.pid)]

    @property
    def worker_pids(self) -> list[int]:
        """The processes that serve (the one process, or the workers)."""
        return children(self.proc.pid) if self.workers > 1 else [self.proc.pid]

    async def metrics(self) -> list[dict[str, Any]]:
        """SIGUSR1: every serving process's figures since the previous call."""
        self.proc.send_signal(signal.SIGUSR1)
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while len(got) < self.workers:
                record = await self._record()
                msg = str(record.get("msg", ""))
                if record.get("logger") == "gateway.metrics" and msg.startswith("metrics "):
                    got.append(json.loads(msg.removeprefix("metrics ")))
        return got

    async def stop(self) -> None:
        """SIGTERM, and wait for the exit."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(60):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
