"""The fake Simli in a process of its own (``python -m fakes.simli``), the way the real service is remote: its
media encoding then costs the caller's process nothing, which is what a test or benchmark of the gateway wants."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

import aiohttp

READY_TIMEOUT_S = 30.0


class FakeSimliProcess:
    """A running ``python -m fakes.simli``. Use as ``async with FakeSimliProcess.start(...) as fake``."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, host: str, *, keys: Sequence[str], faces: Sequence[str] = (), width: int = 512,
                    height: int = 512, fps: float = 30.0) -> Any:
        args = [sys.executable, "-m", "fakes.simli", "--host", host, "--width", str(width), "--height", str(height),
                "--fps", str(fps)]
        for key in keys:
            args += ["--key", key]
        for face in faces:
            args += ["--face", face]
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(READY_TIMEOUT_S):
                line = (await proc.stdout.readline()).decode()
            if "listening on " not in line:
                raise RuntimeError(f"the fake Simli did not start: {line!r}")
            yield cls(proc, line.rsplit(" ", 1)[1].strip())
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()

    async def state(self, *, open_sessions: int | None = None, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The fake's sessions; with `open_sessions`, once that many are open (the fake waits, up to `timeout`)."""
        query = {} if open_sessions is None else {"open": str(open_sessions), "timeout": str(timeout)}
        url = f"{self.url}/_fake/state?{urllib.parse.urlencode(query)}"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            resp.raise_for_status()
            state: dict[str, Any] = json.loads(await resp.text())
        return state
