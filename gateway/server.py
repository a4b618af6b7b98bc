"""The grpc.aio server: AvatarProvider, health, reflection, interceptors, limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging

import grpc
from avatar.v1 import avatar_provider_pb2, avatar_provider_pb2_grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.cluster import ClusterDirectory, ClusterSpec, Peers, internal_handler
from gateway.config import GatewayConfig, check_api_keys
from gateway.interceptors import ErrorInterceptor
from gateway.metrics import probe_loop_lag
from gateway.service import AvatarProviderService
from gateway.session_manager import SessionManager
from gateway.tls import server_credentials, warn_if_exposed
from providers.registry import ProviderRegistry, build_registry

log = logging.getLogger(__name__)

RELAY_MARGIN_S = 5.0
SERVICE_NAME = avatar_provider_pb2.DESCRIPTOR.services_by_name["AvatarProvider"].full_name


def server_options(config: GatewayConfig, *, share_port: bool = False) -> list[tuple[str, int]]:
    """Keepalive and message-size settings. gRPC silently ignores a misspelled option key: keep these exact."""
    return [
        # one process alone must not silently share a port another gateway already serves (gRPC's default is to
        # allow it); the workers of one gateway do share theirs
        ("grpc.so_reuseport", 1 if share_port else 0),
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

    def __init__(self, config: GatewayConfig, registry: ProviderRegistry | None = None,
                 cluster: ClusterSpec | None = None) -> None:
        self.cluster = cluster
        self._peers: Peers | None = None
        self._directory: ClusterDirectory | None = None
        if cluster is not None:
            # the session cap is the whole gateway's: each worker takes its share
            config = dataclasses.replace(
                config, max_sessions=-(-config.max_sessions // cluster.count),
                max_sessions_per_caller=-(-config.max_sessions_per_caller // cluster.count),
                starts_per_minute_per_caller=-(-config.starts_per_minute_per_caller // cluster.count))
            self._peers = Peers(cluster, config.max_message_bytes)
            self._directory = ClusterDirectory(cluster, self._peers)
        self.config = config
        registry = registry or build_registry()
        check_api_keys(config.api_keys, (adapter.info.name for adapter in registry))
        self.manager = SessionManager(config, registry, self._directory)
        self.service = AvatarProviderService(config, self.manager, self._peers)
        self.health = health.aio.HealthServicer()
        self._server = self._grpc_server(share_port=cluster is not None)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self._server,
        )
        # the workers' private socket: calls forwarded between them, and the directory
        self._internal: aio.Server | None = None
        if self._directory is not None:
            self._internal = self._grpc_server(share_port=False)
            self._internal.add_generic_rpc_handlers((internal_handler(self._directory),))
        self.port = 0
        self._stopped = asyncio.Event()
        self._stopping = False
        self._lag_probe: asyncio.Task[None] | None = None

    def _grpc_server(self, *, share_port: bool) -> aio.Server:
        server = aio.server(interceptors=[ErrorInterceptor()], options=server_options(self.config,
                                                                                      share_port=share_port))
        avatar_provider_pb2_grpc.add_AvatarProviderServicer_to_server(  # type: ignore[no-untyped-call]
            self.service, server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        return server

    async def start(self) -> int:
        """Bind the listen address (port 0 picks a free one) and serve."""
        if self.cluster is not None and self._internal is not None:
            path = self.cluster.socket_path(self.cluster.index)
            path.unlink(missing_ok=True)  # left by a worker that did not exit cleanly
            _bind(self._internal, self.cluster.target(self.cluster.index))
            await self._internal.start()
        tls = self.config.tls
        credentials = None if tls is None else await server_credentials(tls)
        self.port = _bind(self._server, self.config.listen, credentials)
        warn_if_exposed(self.config.listen, tls=tls is not None, authenticated=bool(self.config.api_keys))
        for adapter in self.manager.registry:
            await adapter.warm_up()
        if self.config.owns_process:
            # what exists now lives as long as the process: keep it out of every later collection (shorter pauses)
            gc.collect()
            gc.freeze()
        await self._server.start()
        self._lag_probe = asyncio.get_running_loop().create_task(probe_loop_lag(self.manager.metrics),
                                                                 name="loop-lag-probe")
        if self._directory is not None:
            await self._directory.announce_restart()
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
        # streams this worker relays end when their owners, shutting down too, end their sessions
        await self.service.wait_relays(grace + RELAY_MARGIN_S)
        await self._server.stop(1.0)
        if self._internal is not None:
            await self._internal.stop(1.0)
        if self._directory is not None:
            await self._directory.aclose()
        if self._peers is not None:
            await self._peers.aclose()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_probe
        self._stopped.set()
        log.info("gateway stopped")

    async def wait_for_termination(self) -> None:
        """Until the server has stopped."""
        await self._server.wait_for_termination()


def _bind(server: aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Listen on `address` (with TLS if `credentials`); the port bound (a Unix socket: 1). OSError if the address
    is taken or unusable."""
    try:
        port = server.add_insecure_port(address) if credentials is None else \
            server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        raise OSError(f"could not listen on {address} (in use, or not an address of this machine)")
    return int(port)
