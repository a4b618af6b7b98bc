"""Provider adapters by name, and the registry a gateway builds from its configuration."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping

from providers.base import ProviderAdapter


class ProviderRegistry:
    """The providers a gateway knows, in registration order."""

    def __init__(self, adapters: Iterable[ProviderAdapter] = ()) -> None:
        self._adapters: dict[str, ProviderAdapter] = {}
        for adapter in adapters:
            self.register(adapter)

    def register(self, adapter: ProviderAdapter) -> None:
        """Add an adapter; its name must be new."""
        name = adapter.info.name
        if name in self._adapters:
            raise ValueError(f"provider {name!r} is already registered")
        self._adapters[name] = adapter

    def get(self, name: str) -> ProviderAdapter | None:
        """The adapter called `name`, if any."""
        return self._adapters.get(name)

    def __iter__(self) -> Iterator[ProviderAdapter]:
        return iter(self._adapters.values())


def build_registry(env: Mapping[str, str] | None = None) -> ProviderRegistry:
    """Every provider this gateway ships, each enabled or disabled by its settings in `env` (default: the process
    environment). A disabled provider's own modules are never imported."""
    from providers import mock, room_native, simli

    env = os.environ if env is None else env
    return ProviderRegistry([mock.adapter_from_env(env), simli.adapter_from_env(env),
                             *room_native.adapters_from_env(env)])
