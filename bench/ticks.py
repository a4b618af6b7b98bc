"""The load generators' clock: wait for the orchestrator's start time, then tick every 20 ms in real time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from typing import TypeVar

PERIOD_S = 0.02  # one 20 ms audio chunk per stream per tick
PHASES = 10  # the load generators' streams write in 10 groups, 2 ms apart

C = TypeVar("C", bound=Hashable)
S = TypeVar("S")


def by_phase(calls: list[tuple[C, S]]) -> list[tuple[list[tuple[C, S]], list[C]]]:
    """(connection, stream) pairs spread over the PHASES phases: per phase, its pairs and the connections they use
    (each flushed once per phase, so what a connection's streams wrote in it leaves in one write)."""
    groups = [calls[p::PHASES] for p in range(PHASES)]
    return [(group, list(dict.fromkeys(conn for conn, _ in group))) for group in groups]


@dataclass
class Ticker:
    """Real-time ticks of PERIOD_S, each cut into `phases` evenly spaced phases (streams spread over a tick, as
    independent agents are, instead of all writing at once). Counts the phases that started more than one period
    late (the generator could not keep up), and how late the latest phase started."""

    ticks: int
    phases: int = 1
    late: int = 0
    max_late_s: float = 0.0

    async def run(self) -> AsyncIterator[tuple[int, int]]:
        """Announce `ready`, read `go <epoch seconds>` from stdin, then yield (tick, phase) on schedule."""
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        await asyncio.sleep(max(0.0, float(line.split()[1]) - time.time()))
        start = time.monotonic()
        step = PERIOD_S / self.phases
        for n in range(self.ticks * self.phases):
            delay = start + n * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_late_s = max(self.max_late_s, -delay)
                if delay < -PERIOD_S:
                    self.late += 1
            yield divmod(n, self.phases)
