"""The mock provider: a procedural face, no external service, always enabled."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import ProviderAdapter


def adapter_from_env(env: Mapping[str, str]) -> ProviderAdapter:
    """The mock adapter (it has no settings)."""
    from providers.mock.provider import MockProvider

    return MockProvider()
