"""Identifiers in the shapes livekit-server uses (the SDKs check the prefixes)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def _random(n: int = 12) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def room_sid() -> str:
    return f"RM_{_random()}"


def participant_sid() -> str:
    return f"PA_{_random()}"


def track_sid() -> str:
    return f"TR_{_random()}"
