"""Access-token checks, mirroring livekit-server's auth middleware and join validation."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import jwt
from aiohttp import web
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import models

BEARER_PREFIX = "Bearer "
_KIND_NAMES = frozenset(models.ParticipantInfo.Kind.keys())
_SOURCE_NAMES = frozenset(models.TrackSource.keys())


class AuthError(Exception):
    """A refused request: the HTTP status and the message livekit-server would answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class VerifiedToken:
    api_key: str
    claims: Claims

    @property
    def video(self) -> api.VideoGrants:
        return self.claims.video or api.VideoGrants()


def token_from_request(request: web.Request) -> str | None:
    """The bearer token from the Authorization header, or the ``access_token`` query parameter."""
    header = request.headers.get("Authorization")
    if header:
        if not header.startswith(BEARER_PREFIX):
            raise AuthError(401, "invalid authorization header. Must start with " + BEARER_PREFIX)
        return header[len(BEARER_PREFIX) :]
    return request.query.get("access_token") or None


def verify_token(token: str, keys: Mapping[str, str]) -> VerifiedToken:
    """Verify signature, expiry and issuer the way livekit-server does (HTTP 401 on any failure)."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError(401, "invalid authorization token") from exc
    api_key = unverified.get("iss")
    if not isinstance(api_key, str) or api_key not in keys:
        raise AuthError(401, "invalid API key")
    verifier = api.TokenVerifier(api_key, keys[api_key], leeway=datetime.timedelta(seconds=10))
    try:
        claims = verifier.verify(token)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise AuthError(401, f"invalid authorization token: {exc}") from exc
    return VerifiedToken(api_key=api_key, claims=claims)


def check_join(token: VerifiedToken) -> str:
    """Join validation from livekit-server's ValidateConnectRequest; returns the room name."""
    video = token.claims.video
    if video is None or not video.room_join:
        raise AuthError(401, "permissions denied")
    if not token.claims.identity:
        raise AuthError(400, "identity cannot be empty")
    if not video.room:
        raise AuthError(400, "no room name")
    return str(video.room)


def participant_kind(kind: str) -> models.ParticipantInfo.Kind:
    """Map the token's ``kind`` claim ("agent", "sip", ...) to ParticipantInfo.Kind."""
    name = (kind or "standard").upper()
    if name in _KIND_NAMES:
        return cast(models.ParticipantInfo.Kind, models.ParticipantInfo.Kind.Value(name))
    return models.ParticipantInfo.STANDARD


def publish_sources(video: api.VideoGrants) -> list[models.TrackSource]:
    """``can_publish_sources`` as TrackSource values; empty means every source."""
    out: list[models.TrackSource] = []
    for src in video.can_publish_sources or []:
        name = str(src).upper()
        if name in _SOURCE_NAMES:
            out.append(cast(models.TrackSource, models.TrackSource.Value(name)))
    return out


def permission(video: api.VideoGrants) -> models.ParticipantPermission:
    return models.ParticipantPermission(
        can_subscribe=bool(video.can_subscribe),
        can_publish=bool(video.can_publish),
        can_publish_data=bool(video.can_publish_data),
        can_publish_sources=publish_sources(video),
        hidden=bool(video.hidden),
        recorder=bool(video.recorder),
        can_update_metadata=bool(video.can_update_own_metadata),
        agent=bool(video.agent),
        can_subscribe_metrics=bool(video.can_subscribe_metrics),
        can_manage_agent_session=bool(video.can_manage_agent_session),
    )


def can_publish_source(video: api.VideoGrants, source: models.TrackSource) -> bool:
    """livekit-server's CanPublishSource: needs can_publish, and the source listed if any are."""
    if not video.can_publish:
        return False
    sources = publish_sources(video)
    return not sources or source in sources


def require_admin(token: VerifiedToken, room: str) -> None:
    video = token.claims.video
    if video is None or not video.room_admin or video.room != room:
        raise AuthError(401, "permissions denied")


def require_list(token: VerifiedToken) -> None:
    video = token.claims.video
    if video is None or not video.room_list:
        raise AuthError(401, "permissions denied")


def require_create(token: VerifiedToken) -> None:
    video = token.claims.video
    if video is None or not video.room_create:
        raise AuthError(401, "permissions denied")
