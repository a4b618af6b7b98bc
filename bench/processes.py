"""The benchmarks' child processes: a free port to give one, and stopping one (gracefully, then for good)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

STOP_TIMEOUT_S = 20.0


def free_port(host: str) -> int:
    """A port nothing listens on at `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL if it is not gone within STOP_TIMEOUT_S."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
