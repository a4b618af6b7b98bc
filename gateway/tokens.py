"""The avatar participant's LiveKit token, minted by the gateway so callers never hold LiveKit secrets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from livekit import api

PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
AVATAR_PROVIDER = "lk.avatar_provider"


def avatar_identity(provider: str, session_id: str) -> str:
    """Identity of a session's avatar participant."""
    return f"avatar-{provider}-{session_id}"


def relay_identity(avatar: str) -> str:
    """Identity of the gateway's relay participant beside a vendor's avatar `avatar`."""
    return f"{avatar}-relay"


def mint_avatar_token(
    *,
    api_key: str,
    api_secret: str,
    room_name: str,
    identity: str,
    agent_identity: str,
    provider: str,
    can_subscribe: bool = False,
    ttl_s: int = 3600,
    sources: Sequence[str] = ("camera", "microphone"),
    kind: Literal["agent", "standard"] = "agent",
    hidden: bool = False,
) -> str:
    """A room-scoped agent-kind token that may publish data and `sources` only (a vendor's relay: the microphone,
    for the voice alone; no sources: data only; `kind` "standard" and `hidden`: a watcher no one else sees)."""
    grants = api.VideoGrants(
        room_join=True,
        room=room_name,
        can_publish=bool(sources),
        can_publish_sources=list(sources),
        can_publish_data=True,
        can_subscribe=can_subscribe,
        hidden=hidden,
    )
    token = (
        api.AccessToken(api_key, api_secret)
        .with_kind(kind)
        .with_identity(identity)
        .with_name(f"{provider} avatar")
        .with_grants(grants)
        .with_ttl(timedelta(seconds=ttl_s))
        .with_attributes({PUBLISH_ON_BEHALF: agent_identity, AVATAR_PROVIDER: provider})
    )
    return token.to_jwt()
