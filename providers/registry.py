"""Provider adapters by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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


def default_registry() -> ProviderRegistry:
    """Every provider this gateway ships."""
    from providers.mock.provider import MockProvider

    return ProviderRegistry([MockProvider()])
