"""A connected participant as the server sees it: identity, grants, published tracks, its RTC session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from livekit import api
from livekit.protocol import models
from livekit.protocol import rtc as proto_rtc

from .auth import VerifiedToken, participant_kind, permission
from .forwarding import TrackForwarder
from .ids import participant_sid
from .rtc_session import RtcSession


class SignalSink(Protocol):
    """Where a participant's SignalResponses go (the WebSocket writer)."""

    def send(self, message: proto_rtc.SignalResponse) -> None: ...

    async def close(self) -> None: ...


@dataclass
class PublishedTrack:
    info: models.TrackInfo
    cid: str
    publisher_sid: str
    forwarder: TrackForwarder | None = None

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def kind(self) -> str:
        return "audio" if self.info.type == models.AUDIO else "video"


class Participant:
    def __init__(
        self,
        *,
        token: VerifiedToken,
        signal: SignalSink,
        single_pc: bool,
        auto_subscribe: bool,
        client_info: models.ClientInfo,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> None:
        claims = token.claims
        self.sid = participant_sid()
        self.identity = claims.identity
        self.name = claims.name or ""
        self.kind = participant_kind(claims.kind or "")
        self.metadata = metadata if metadata is not None else (claims.metadata or "")
        self.attributes: dict[str, str] = dict(claims.attributes or {})
        if attributes:
            self.attributes.update(attributes)
        self.grants: api.VideoGrants = token.video
        self.signal = signal
        self.single_pc = single_pc
        self.auto_subscribe = auto_subscribe
        self.client_info = client_info
        self.state: models.ParticipantInfo.State = models.ParticipantInfo.JOINED
        self.joined_at_ms = int(time.time() * 1000)
        self.version = 1
        self.disconnect_reason: models.DisconnectReason = models.UNKNOWN_REASON
        self.tracks: dict[str, PublishedTrack] = {}  # live tracks by sid
        self.pending_tracks: dict[str, PublishedTrack] = {}  # AddTrack accepted, media not yet negotiated
        self.tracks_by_mid: dict[str, PublishedTrack] = {}
        self.rtc: RtcSession | None = None

    @property
    def hidden(self) -> bool:
        return self.grants.hidden is True

    @property
    def can_publish(self) -> bool:
        return bool(self.grants.can_publish)

    @property
    def can_subscribe(self) -> bool:
        return bool(self.grants.can_subscribe)

    @property
    def can_publish_data(self) -> bool:
        return bool(self.grants.can_publish_data)

    @property
    def connected(self) -> bool:
        return self.state != models.ParticipantInfo.DISCONNECTED

    def touch(self) -> None:
        self.version += 1

    def info(self) -> models.ParticipantInfo:
        return models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=self.state,
            tracks=[t.info for t in self.tracks.values()],
            metadata=self.metadata,
            joined_at=self.joined_at_ms // 1000,
            joined_at_ms=self.joined_at_ms,
            version=self.version,
            permission=permission(self.grants),
            region="loopback",
            is_publisher=bool(self.tracks),
            kind=self.kind,
            attributes=self.attributes,
            disconnect_reason=self.disconnect_reason,
            client_protocol=self.client_info.client_protocol,
        )
