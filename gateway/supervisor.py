"""`avatar-gateway serve --workers N`: N worker processes behind one listen port, kept running.

The supervisor picks the port (a free one for port 0), makes a private directory for the workers' sockets, starts
every worker (`avatar-gateway serve ... --worker I/N`), and reports the port once all of them serve. A worker that
dies is started again (its sessions are gone; the others' are untouched). SIGTERM or SIGINT stops every worker
gracefully (each lets its buffered speech play out, ends its sessions, and its avatars leave); SIGUSR1 makes every
worker log its metrics. A worker whose supervisor disappears (its stdin closes) shuts itself down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("gateway.supervisor")

READY = b"ready"
START_TIMEOUT_S = 120.0
RESTART_DELAY_S = 1.0
MAX_RESTARTS_PER_MINUTE = 5


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket holding `port` (a free one for 0) that the workers can share: fails if another program has it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:  # refuse a port that is taken, before sharing it
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))  # bound, never listening: the kernel gives it no connections
    return sock


class Supervisor:
    """Runs and watches the workers."""

    def __init__(self, argv: list[str], workers: int, listen: str, grace_s: float) -> None:
        self._argv = argv
        self._count = workers
        self._host, self._port = split_listen(listen)
        self._grace = grace_s
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._restarts: list[float] = []
        self.port = 0

    def _command(self, index: int, run_dir: Path) -> list[str]:
        host = f"[{self._host}]" if ":" in self._host else self._host
        # the worker takes the supervisor's own arguments; the ones appended last win
        return [sys.executable, "-m", "gateway.cli", "serve", *self._argv, "--listen", f"{host}:{self.port}",
                "--worker", f"{index}/{self._count}", "--run-dir", str(run_dir)]

    async def _spawn(self, index: int, run_dir: Path) -> None:
        proc = await asyncio.create_subprocess_exec(*self._command(index, run_dir), stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        self._procs[index] = proc
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await proc.stdout.readline()
        except TimeoutError:
            line = b""
        if line.strip() != READY:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuntimeError(f"worker {index} did not start")

    async def run(self, port_file: str | None = None) -> int:
        """Serve until SIGTERM/SIGINT; the exit status."""
        loop = asyncio.get_running_loop()
        reservation = reserve_port(self._host, self._port)
        self.port = reservation.getsockname()[1]
        run_dir = Path(tempfile.mkdtemp(prefix="avatar-gateway-"))  # mode 0700
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, self._forward, signal.SIGUSR1)
        failed = False
        try:
            try:
                await asyncio.gather(*(self._spawn(i, run_dir) for i in range(self._count)))
            except RuntimeError as exc:
                log.error("%s: stopping", exc)
                return 1
            finally:
                reservation.close()
            if port_file:
                await asyncio.to_thread(Path(port_file).write_text, f"{self.port}\n")
            log.info("gateway listening on port %d (%d worker processes)", self.port, self._count)
            failed = not await self._watch(run_dir)
        finally:
            await self._stop_all()
            await asyncio.to_thread(shutil.rmtree, run_dir, True)
        codes = [p.returncode for p in self._procs.values()]
        log.info("gateway stopped")
        return 1 if failed or any(codes) else 0

    async def _watch(self, run_dir: Path) -> bool:
        """Restart workers that die, until asked to stop; False if they keep dying."""
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                exits = {asyncio.ensure_future(p.wait()): i for i, p in self._procs.items()}
                done, _ = await asyncio.wait([stop, *exits], return_when=asyncio.FIRST_COMPLETED)
                for waiter in exits:
                    waiter.cancel()
                if stop in done:
                    return True
                for waiter in done:
                    index = exits[waiter]
                    log.error("worker %d exited unexpectedly (status %s): starting it again", index,
                              self._procs[index].returncode)
                    if not self._may_restart():
                        log.error("workers keep exiting: stopping")
                        return False
                    await asyncio.sleep(RESTART_DELAY_S)
                    try:
                        await self._spawn(index, run_dir)
                    except RuntimeError as exc:
                        log.error("%s: stopping", exc)
                        return False
        finally:
            stop.cancel()

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60.0] + [now]
        return len(self._restarts) <= MAX_RESTARTS_PER_MINUTE

    def _forward(self, sig: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _stop_all(self) -> None:
        self._forward(signal.SIGTERM)
        procs = [p for p in self._procs.values() if p.returncode is None]
        if not procs:
            return
        _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=self._grace + 30.0)
        if late:
            log.error("%d worker processes did not stop in time: killing them", len(late))
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            await asyncio.gather(*(p.wait() for p in procs))
