"""The grpc.aio server: AvatarProvider, health, reflection, interceptors, limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from avatar.v1 import avatar_provider_pb2, avatar_provider_pb2_grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.config import GatewayConfig
from gateway.interceptors import ErrorInterceptor
from gateway.service import AvatarProviderService
from gateway.sessions import SessionManager
from providers.registry import ProviderRegistry, default_registry

log = logging.getLogger(__name__)

SERVICE_NAME = avatar_provider_pb2.DESCRIPTOR.services_by_name["AvatarProvider"].full_name


def server_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """Keepalive and message-size settings (see grpc-api.md: misspelled keys are silently ignored)."""
    return [
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # one agent process may run hundreds of sessions over one channel: each stream is one HTTP/2 stream
        ("grpc.max_concurrent_streams", 4096),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]


class GatewayServer:
    """One gateway process's server. `start()` binds and returns the port; `stop()` shuts down gracefully."""

    def __init__(self, config: GatewayConfig, registry: ProviderRegistry | None = None) -> None:
        self.config = config
        self.manager = SessionManager(config, registry or default_registry())
        self.service = AvatarProviderService(config, self.manager)
        self.health = health.aio.HealthServicer()
        self._server = aio.server(interceptors=[ErrorInterceptor()], options=server_options(config))
        avatar_provider_pb2_grpc.add_AvatarProviderServicer_to_server(  # type: ignore[no-untyped-call]
            self.service, self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self._server,
        )
        self.port = 0
        self._stopped = asyncio.Event()
        self._stopping = False

    async def start(self) -> int:
        """Bind the listen address (port 0 picks a free one) and serve."""
        self.port = self._server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"could not listen on {self.config.listen}")
        for adapter in self.manager.registry:
            await adapter.warm_up()
        # what exists now lives as long as the process: keep it out of every later collection (shorter GC pauses)
        gc.collect()
        gc.freeze()
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gateway listening on port %d (%s)", self.port,
                 "headless" if self.config.headless else "LiveKit" if self.config.livekit_configured
                 else "no LiveKit configured")
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, go_away to open streams, let buffered speech play out (up to the grace period), end
        every session (the avatars leave their rooms), then stop the server. Idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        self.manager.begin_shutdown()
        self.service.go_away(grace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(s.wait_drained() for s in self.manager.active()))
        await self.manager.shutdown()
        await self._server.stop(1.0)
        self._stopped.set()
        log.info("gateway stopped")

    async def wait_for_termination(self) -> None:
        """Until the server has stopped."""
        await self._server.wait_for_termination()
