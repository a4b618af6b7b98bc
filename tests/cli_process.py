"""`avatar-gateway serve` run as a real process in tests, its stderr collected line by line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

TIMEOUT = 30.0  # safety net for any single wait; never a synchronisation mechanism


def gateway_executable() -> Path:
    """The installed console script."""
    exe = Path(sys.executable).with_name("avatar-gateway")
    assert exe.exists(), f"the avatar-gateway console script is not installed next to {sys.executable}"
    return exe


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without gateway or LiveKit settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_GATEWAY_", "LIVEKIT_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


class GatewayProcess:
    """A running `avatar-gateway serve`; `lines` grows as it logs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._change = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="cli-stderr")

    @classmethod
    async def start(cls, *args: str, env: Mapping[str, str]) -> GatewayProcess:
        """`avatar-gateway serve ARGS` with `env`."""
        proc = await asyncio.create_subprocess_exec(
            str(gateway_executable()), "serve", *args, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._change.set()
        self._change.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_line(self, pattern: str, after: int = 0) -> re.Match[str]:
        """The first stderr line from line `after` on matching `pattern` (waits for it; fails if the process ends
        first)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                for line in self.lines[after:]:
                    if m := re.search(pattern, line):
                        return m
                if self._reader.done():
                    raise AssertionError(f"avatar-gateway exited ({self.proc.returncode}) before logging "
                                         f"{pattern!r}:\n{self.output}")
                self._change.clear()
                await self._change.wait()

    async def wait(self) -> int:
        """Until the process exits; its status."""
        async with asyncio.timeout(TIMEOUT):
            code = await self.proc.wait()
            await self._reader
        return code

    async def aclose(self) -> None:
        """Kill it if it still runs."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
