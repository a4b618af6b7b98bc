"""Simli behind the gateway (the stream-pair republish shape): the real simli-ai client over its P2P transport,
Simli's own audio and video republished into the room by the gateway. Enabled when SIMLI_API_KEY is set; the
Simli client (and aiortc) is imported only then."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from providers.base import ProviderAdapter
from providers.disabled import DisabledProvider
from providers.simli.settings import SIMLI_INFO, SimliSettings


def adapter_from_env(env: Mapping[str, str]) -> ProviderAdapter:
    """The Simli adapter, or a disabled entry saying why."""
    settings = SimliSettings.from_env(env)
    if settings is None:
        return DisabledProvider(dataclasses.replace(SIMLI_INFO, enabled=False,
                                                    disabled_reason="SIMLI_API_KEY is not set"))
    from providers.simli.adapter import SimliProvider

    return SimliProvider(settings)
