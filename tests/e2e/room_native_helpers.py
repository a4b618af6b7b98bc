"""Helpers for the room-native vendor tests: a registry with every vendor pointed at the fakes, a started session."""

from __future__ import annotations

from agent_client import AvatarGatewayClient
from fakes.room_native import FakeVendors
from providers.registry import ProviderRegistry, build_registry
from providers.room_native.vendors import VENDORS
from tests.e2e.e2e_helpers import Harness, avatar_identity_for, new_session_id

KEY = "vendor-test-key-0123456789"


def vendor_registry(fake: FakeVendors) -> ProviderRegistry:
    env = {}
    for vendor in VENDORS:
        env[vendor.key_env] = KEY
        env[vendor.url_env] = fake.url
    return build_registry(env)


async def started(e2e: Harness, fake: FakeVendors, vendor: str) -> tuple[AvatarGatewayClient, str, str]:
    """A gateway, a viewer in the room, a session of `vendor` whose worker is up: (client, session name, avatar)."""
    _, client = await e2e.gateway_client(vendor_registry(fake))
    session_id = new_session_id()
    avatar = avatar_identity_for(session_id, vendor)
    viewer = await e2e.viewer(avatar)
    session = await e2e.start_session(client, session_id, provider=vendor, avatar_id="face-1")
    await e2e.watch(viewer)
    return client, session.name, avatar
