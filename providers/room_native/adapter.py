"""The one adapter for every room-native vendor: a `Vendor` entry and its API key make a provider."""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import (
    OptionError,
    PcmFormat,
    ProviderAdapter,
    ProviderError,
    ProviderInfo,
    ProviderSession,
    SessionSpec,
    VideoSpec,
)
from providers.pipeline import MediaPipeline, PipelineParts
from providers.room_native.pipeline import RoomNativePipeline
from providers.room_native.vendor_http import VendorHttp
from providers.room_native.vendors import Vendor

VENDOR_VIDEO = VideoSpec(width=1280, height=720, fps=25)  # nominal: the vendor publishes what it publishes


def vendor_info(vendor: Vendor, *, enabled: bool = True, disabled_reason: str = "") -> ProviderInfo:
    """What ListProviders says about a vendor."""
    return ProviderInfo(name=vendor.name, display_name=vendor.display_name,
                        audio_format=PcmFormat(vendor.sample_rate, 1), default_video=VENDOR_VIDEO,
                        max_session_seconds=vendor.max_session_s, enabled=enabled, disabled_reason=disabled_reason,
                        gateway_publishes=False)


class RoomNativeProvider(ProviderAdapter):
    """A room-native vendor with its key."""

    def __init__(self, vendor: Vendor, key: str, base_url: str) -> None:
        self.vendor = vendor
        self._key = key
        self._http = VendorHttp(vendor.display_name, base_url, key)
        self._info = vendor_info(vendor)

    @property
    def info(self) -> ProviderInfo:
        return self._info

    def validate_options(self, avatar_id: str, options: Mapping[str, str]) -> None:
        for key in options:
            if key not in self.vendor.options:
                raise OptionError(key, f"unknown option {key!r} for provider {self.vendor.name!r}; it takes "
                                       f"{list(self.vendor.options)}")
        if not avatar_id and not self.vendor.default_avatar_id:
            raise OptionError("avatar_id", f"provider {self.vendor.name!r} needs an avatar_id (its avatar, face or "
                                           "agent id)", field="avatar_id")

    async def start(self, spec: SessionSpec) -> ProviderSession:
        raise ProviderError.internal("a room-native vendor publishes itself: it runs its own pipeline")

    def pipeline(self, parts: PipelineParts) -> MediaPipeline:
        return RoomNativePipeline(self.vendor, self._key, self._http, parts)
