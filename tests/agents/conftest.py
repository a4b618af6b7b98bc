"""The LiveKit Agents tests share the end-to-end fixtures: one LiveKit target per run, a harness per test."""

from tests.e2e.conftest import e2e, livekit_target, vendors

__all__ = ["e2e", "livekit_target", "vendors"]
