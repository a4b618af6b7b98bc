"""The gateway inside the agent's own process, on a private Unix socket (`AvatarSession(gateway="embedded")`)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.server import GatewayServer

log = logging.getLogger(__name__)


class EmbeddedGateway:
    """A `gateway.server.GatewayServer` listening on `unix:<private dir>/gateway.sock` (the directory is the
    process owner's only). LiveKit settings come from the arguments or LIVEKIT_URL / LIVEKIT_API_KEY /
    LIVEKIT_API_SECRET; everything else from the gateway's usual environment (AVATAR_GATEWAY_*, provider keys).
    No caller authentication: only this process's user can reach the socket."""

    def __init__(self, *, livekit_url: str | None = None, livekit_api_key: str | None = None,
                 livekit_api_secret: str | None = None) -> None:
        self._url = livekit_url or os.environ.get("LIVEKIT_URL", "")
        self._key = livekit_api_key or os.environ.get("LIVEKIT_API_KEY", "")
        self._secret = livekit_api_secret or os.environ.get("LIVEKIT_API_SECRET", "")
        self._dir: Path | None = None
        self.server: GatewayServer | None = None
        self.target = ""

    async def start(self) -> str:
        """Start serving; returns the gRPC target (`unix:/...`)."""
        missing = [name for name, value in (("LIVEKIT_URL", self._url), ("LIVEKIT_API_KEY", self._key),
                                            ("LIVEKIT_API_SECRET", self._secret)) if not value]
        if missing:
            raise ValueError(f"the embedded avatar gateway needs {', '.join(missing)} (environment or arguments)")
        from gateway.config import from_env
        from gateway.server import GatewayServer

        self._dir = Path(tempfile.mkdtemp(prefix="avatar-gateway-"))
        path = self._dir / "gateway.sock"
        config = from_env(listen=f"unix:{path}", livekit_url=self._url, livekit_api_key=self._key,
                          livekit_api_secret=self._secret, api_keys={}, workers=1, shutdown_grace_s=0.0,
                          owns_process=False)
        self.server = GatewayServer(config)
        try:
            await self.server.start()
        except BaseException:
            self.server = None
            self._remove_dir()
            raise
        self.target = f"unix:{path}"
        log.info("embedded avatar gateway serving on %s", self.target)
        return self.target

    async def stop(self) -> None:
        """End every session (the avatars leave their rooms) and stop. Idempotent."""
        server, self.server = self.server, None
        try:
            if server is not None:
                await server.stop(0.0)
        finally:
            self._remove_dir()

    def _remove_dir(self) -> None:
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None
