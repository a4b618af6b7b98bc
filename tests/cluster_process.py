"""A running `avatar-gateway serve --workers 2` (headless, two API keys) for the tests that drive one, and ways to
reach each of its workers."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from avatar.v1 import session_pb2

from agent_client import AvatarGatewayClient
from tests.cli_process import TIMEOUT, GatewayProcess, clean_env

KEYS = "alice:key-a,bob:key-b"
WORKERS = 2


class Cluster:
    """A running multi-worker gateway and ways to reach each of its workers."""

    def __init__(self, process: GatewayProcess, port: int, tmp: Path) -> None:
        self.process = process
        self.port = port
        (self.run_dir,) = tmp.glob("avatar-gateway-*")
        self._clients: list[AvatarGatewayClient] = []

    @classmethod
    async def start(cls, tmp: Path, *args: str) -> Cluster:
        env = clean_env(TMPDIR=str(tmp), AVATAR_GATEWAY_API_KEYS=KEYS)
        process = await GatewayProcess.start("--headless", "--workers", str(WORKERS), "--listen", "127.0.0.1:0",
                                             "--shutdown-grace", "5", *args, env=env)
        try:
            port = int((await process.wait_line(r"listening on port (\d+) \(2 worker processes\)")).group(1))
        except BaseException:
            await process.aclose()
            raise
        return cls(process, port, tmp)

    def client(self, worker: int | None = None, key: str = "key-a") -> AvatarGatewayClient:
        """A client whose connection lands on `worker` (None: the public port, wherever the kernel sends it)."""
        target = f"127.0.0.1:{self.port}" if worker is None else f"unix:{self.run_dir}/worker-{worker}.sock"
        client = AvatarGatewayClient(target, api_key=key, timeout=TIMEOUT)
        self._clients.append(client)
        return client

    def worker_pids(self) -> list[int]:
        pid = self.process.proc.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()
        if self.process.proc.returncode is None:
            self.process.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await self.process.wait()
        await self.process.aclose()


async def start(client: AvatarGatewayClient, **kwargs: object) -> session_pb2.Session:
    """A small headless mock session (`kwargs` override its parameters)."""
    params: dict[str, object] = {"room_name": "r", "agent_identity": "agent-1", "width": 64, "height": 48,
                                 "fps": 10}
    params.update(kwargs)
    return await client.start_session("mock", **params)  # type: ignore[arg-type]


def is_worker(pid: int, index: int) -> bool:
    """`pid` is the cluster's worker `index`."""
    return f"--worker\x00{index}/" in Path(f"/proc/{pid}/cmdline").read_text()
