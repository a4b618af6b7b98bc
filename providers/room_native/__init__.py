"""Room-native vendors behind the gateway (Tavus, D-ID, Beyond Presence, Anam, Simli's LiveKit integration,
Runway, LemonSlice): their workers join the session's room and publish the avatar themselves; the gateway starts
and stops them and relays the agent's speech. A vendor is enabled when its API key is set (`<KEY_ENV>`, or
`<KEY_ENV>_FILE` as the gateway reads secrets from files); its HTTP and room code is loaded only then."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import ProviderAdapter
from providers.disabled import DisabledProvider
from providers.room_native.vendors import VENDORS, Vendor


def adapter_for(vendor: Vendor, env: Mapping[str, str]) -> ProviderAdapter:
    """The vendor's adapter, or a disabled entry saying why."""
    from providers.room_native.adapter import RoomNativeProvider, vendor_info

    key = env.get(vendor.key_env, "")
    if not key:
        return DisabledProvider(vendor_info(vendor, enabled=False, disabled_reason=f"{vendor.key_env} is not set"))
    return RoomNativeProvider(vendor, key, env.get(vendor.url_env, "") or vendor.base_url)


def adapters_from_env(env: Mapping[str, str]) -> list[ProviderAdapter]:
    """Every room-native vendor, enabled or not."""
    return [adapter_for(vendor, env) for vendor in VENDORS]
