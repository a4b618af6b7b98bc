"""Fixtures for Simli behind the gateway: the fake Simli (fakes.simli) that the REAL simli-ai client talks to, and
a gateway whose registry is built from the environment a Simli customer sets (SIMLI_API_KEY, SIMLI_FACE_ID,
SIMLI_URL). WebRTC needs the network namespace of ``scripts/netns-run``; outside it these tests skip. After every
test the fake has no session open: whatever path ended it, the gateway stopped its Simli session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agent_client import AvatarGatewayClient
from fakes.simli import FakeSimli
from gateway.server import GatewayServer
from loopback import loopback_host, not_in_namespace_reason
from providers.registry import ProviderRegistry, build_registry

KEY = "simli-test-key"
FACE = "face-one"
OTHER_FACE = "face-two"
BROKE_KEY = "simli-key-without-credits"
WAIT = 20.0  # safety net only

MakeGateway = Callable[..., Awaitable[GatewayServer]]


def simli_env(fake: FakeSimli, key: str = KEY) -> dict[str, str]:
    """The environment a Simli customer's gateway runs with, pointed at the fake."""
    return {"SIMLI_API_KEY": key, "SIMLI_FACE_ID": FACE, "SIMLI_URL": fake.url}


def simli_registry(fake: FakeSimli, key: str = KEY) -> ProviderRegistry:
    return build_registry(simli_env(fake, key))


@pytest.fixture
async def fake_simli() -> AsyncIterator[FakeSimli]:
    reason = not_in_namespace_reason()
    if reason is not None:
        pytest.skip(reason)
    async with FakeSimli(loopback_host(), api_keys=(KEY, BROKE_KEY), faces={FACE, OTHER_FACE},
                         billing_blocked=(BROKE_KEY,)) as fake:
        yield fake
        # torn down after the gateways of the test (requested after this fixture): none left a session open
        await fake.wait_open_sessions(0, timeout=WAIT)


@pytest.fixture
async def simli_gateway(fake_simli: FakeSimli, make_gateway: MakeGateway) -> AsyncIterator[GatewayServer]:
    """A headless gateway with Simli enabled against the fake; stopped, then the fake must have nothing open."""
    server = await make_gateway(registry=simli_registry(fake_simli))
    yield server
    await server.stop(0.0)
    await fake_simli.wait_open_sessions(0, timeout=WAIT)


@pytest.fixture
async def simli_client(simli_gateway: GatewayServer) -> AsyncIterator[AvatarGatewayClient]:
    async with AvatarGatewayClient(f"127.0.0.1:{simli_gateway.port}", timeout=WAIT) as client:
        yield client
