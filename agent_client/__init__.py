"""Typed async client for the avatar gateway (avatar.v1.AvatarProvider)."""

from agent_client.audio_stream import (
    AudioStream,
    GoAway,
    PlaybackEvent,
    PlaybackFinished,
    PlaybackStarted,
    SessionEnded,
    StreamWarning,
)
from agent_client.client import AvatarGatewayClient, ProviderInfo, Session
from agent_client.errors import GatewayError
from agent_client.tls import ClientTls

__all__ = [
    "AudioStream",
    "AvatarGatewayClient",
    "ClientTls",
    "GatewayError",
    "GoAway",
    "PlaybackEvent",
    "PlaybackFinished",
    "PlaybackStarted",
    "ProviderInfo",
    "Session",
    "SessionEnded",
    "StreamWarning",
]
