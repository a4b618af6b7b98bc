"""A provider that is known but cannot be used here (for example its API key is not configured).

ListProviders shows it with `enabled` false and the reason; StartSession answers FAILED_PRECONDITION naming the
reason. It never loads the provider's own modules.
"""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import ProviderAdapter, ProviderError, ProviderInfo, ProviderSession, SessionSpec


class DisabledProvider(ProviderAdapter):
    """Describes a provider that is switched off."""

    def __init__(self, info: ProviderInfo) -> None:
        self._info = info

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def validate_options(self, avatar_id: str, options: Mapping[str, str]) -> None:
        """Anything: the session is refused as disabled, whatever it asks for."""

    async def start(self, spec: SessionSpec) -> ProviderSession:
        raise ProviderError.precondition(f"provider {self._info.name!r} is not available: "
                                         f"{self._info.disabled_reason}", "PROVIDER_DISABLED")
