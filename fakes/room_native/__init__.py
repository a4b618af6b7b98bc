"""Local fakes of the room-native avatar vendors (Tavus, D-ID, Beyond Presence, Anam, Simli's LiveKit integration,
Runway, LemonSlice): their HTTP APIs as the vendors' plugins call them, and workers built from livekit-agents' own
avatar classes that join the room they are given."""

from .server import FakeVendors, FakeVendorSession

__all__ = ["FakeVendorSession", "FakeVendors"]
