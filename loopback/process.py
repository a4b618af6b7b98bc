"""The development server in its own process, as a real livekit-server runs beside its clients: started on a free
port, its URL and credentials, RoomService access, stopped on exit. Its packet forwarding then never waits on the
caller's event loop (a viewer in the caller's process would otherwise measure the server's delays as its own)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from livekit import api

from .netns import loopback_host

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LoopbackProcess:
    """A running `python -m loopback`."""

    url: str
    api_key: str
    api_secret: str
    process: asyncio.subprocess.Process

    def token(self, identity: str, room: str, *, kind: str | None = None) -> str:
        """A join token for `room`."""
        token = (api.AccessToken(self.api_key, self.api_secret).with_identity(identity)
                 .with_grants(api.VideoGrants(room_join=True, room=room)))
        if kind:
            token = token.with_kind(kind)  # type: ignore[arg-type]
        return token.to_jwt()

    async def participants(self, room: str) -> list[str]:
        """Identities in `room` (RoomService ListParticipants; none once the room is gone)."""
        async with api.LiveKitAPI(self.url, self.api_key, self.api_secret) as lkapi:
            rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))
            if not rooms.rooms:
                return []
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
            return [p.identity for p in listed.participants]

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, *, api_key: str = "devkey", extra: tuple[str, ...] = (), cwd: str | None = None
                    ) -> AsyncIterator[LoopbackProcess]:
        """Start it on a free port of the namespace's address; stop it (SIGTERM, then SIGKILL) on exit."""
        host, secret = loopback_host(), secrets.token_urlsafe(32)
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        url = f"ws://{host}:{port}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loopback", "--host", host, "--port", str(port), "--api-key", api_key,
            "--log-level", "WARNING", *extra, stdout=asyncio.subprocess.PIPE, cwd=cwd,
            env=dict(os.environ, LIVEKIT_API_SECRET=secret))
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(START_TIMEOUT_S):
                banner = (await proc.stdout.readline()).decode()
            if url not in banner:
                raise RuntimeError(f"the loopback server did not start: {banner.strip()!r}")
            yield cls(url, api_key, secret, proc)
        finally:
            await stop_process(proc)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL if it is not gone within STOP_TIMEOUT_S."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
