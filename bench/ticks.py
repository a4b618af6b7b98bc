"""The load generators' clock: wait for the orchestrator's start time, then tick every 20 ms in real time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

PERIOD_S = 0.02  # one 20 ms audio chunk per stream per tick


@dataclass
class Ticker:
    """Counts the ticks that started more than one period late (the generator could not keep up)."""

    ticks: int
    late: int = 0

    async def run(self) -> AsyncIterator[int]:
        """Announce `ready`, read `go <epoch seconds>` from stdin, then yield tick numbers on schedule."""
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        await asyncio.sleep(max(0.0, float(line.split()[1]) - time.time()))
        start = time.monotonic()
        for tick in range(self.ticks):
            delay = start + tick * PERIOD_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -PERIOD_S:
                self.late += 1
            yield tick
