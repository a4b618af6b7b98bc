"""Shared fixtures: a real gateway on 127.0.0.1:0 in the test's event loop, a client, speech-like audio, and a leak
check after every gateway test (no session left active, no task left running)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from agent_client import AvatarGatewayClient
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from providers.registry import ProviderRegistry, build_registry

SPEECH_RATE = 16000


def speech(seconds: float, rate: int = SPEECH_RATE, *, seed: int = 1, channels: int = 1) -> np.ndarray:
    """Deterministic speech-like audio: a voiced tone with a syllable-rate (4 Hz) envelope, int16 interleaved."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t)
    voice = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t) + 0.05 * rng.standard_normal(n)
    mono = (envelope * voice * 9000).astype(np.int16)
    return np.repeat(mono, channels) if channels > 1 else mono


def chunks(samples: np.ndarray, rate: int = SPEECH_RATE, ms: int = 20, channels: int = 1) -> list[bytes]:
    """Split interleaved samples into chunks of `ms` milliseconds."""
    step = rate * ms // 1000 * channels
    return [samples[i : i + step].tobytes() for i in range(0, samples.size, step)]


@pytest.fixture
async def make_gateway() -> AsyncIterator[Callable[..., object]]:
    """Start gateways with config overrides (and optionally a provider registry); every one is stopped and
    checked for leaks at teardown."""
    servers: list[GatewayServer] = []

    async def start(registry: ProviderRegistry | None = None, **overrides: object) -> GatewayServer:
        base = GatewayConfig(listen="127.0.0.1:0", headless=True, shutdown_grace_s=0.0)
        # the providers as a machine with no provider settings has them (the developer's own keys play no part)
        registry = registry or build_registry({})
        server = GatewayServer(dataclasses.replace(base, **overrides), registry)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0.0)
        assert not server.manager.active(), "sessions still active after shutdown"
    await _assert_no_leaked_tasks()


async def _assert_no_leaked_tasks() -> None:
    current = asyncio.current_task()
    # give cancelled tasks one loop turn to finish unwinding
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    names = sorted(t.get_name() for t in left)
    ours = [n for n in names if n in ("playout", "timers", "end", "audio-reader")]
    assert not ours, f"gateway tasks leaked: {ours}"


@pytest.fixture
async def gateway(make_gateway: Callable[..., object]) -> GatewayServer:
    """A headless gateway with default settings."""
    server = await make_gateway()  # type: ignore[misc]
    assert isinstance(server, GatewayServer)
    return server


@pytest.fixture
async def client(gateway: GatewayServer) -> AsyncIterator[AvatarGatewayClient]:
    """A client of the `gateway` fixture."""
    async with AvatarGatewayClient(f"127.0.0.1:{gateway.port}", timeout=20) as c:
        yield c


async def start_mock(client: AvatarGatewayClient, **kwargs: object) -> str:
    """Start a mock session in room 'test-room' for agent 'agent-1'; returns its name."""
    params: dict[str, object] = {"room_name": "test-room", "agent_identity": "agent-1"}
    params.update(kwargs)
    session = await client.start_session("mock", **params)  # type: ignore[arg-type]
    return session.name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Shut the livekit FFI runtime down while Python is still fully alive.

    Left to its atexit hook, the native runtime can call back into Python (logging) during interpreter
    finalization, which occasionally aborts the process after every test passed.
    """
    from livekit.rtc._ffi_client import FfiClient

    if FfiClient._instance is not None:
        FfiClient._instance._dispose()
