"""LiveKit Agents integration: `AvatarSession(gateway=..., provider=...)`, then `await avatar.start(session, room)`.

Imports livekit-agents; `agent_client` itself does not.
"""

from agent_client.livekit.audio_output import AvatarStreamError, GatewayAudioOutput
from agent_client.livekit.avatar import API_KEY_ENV, EMBEDDED, GATEWAY_ENV, AvatarJoinError, AvatarSession
from agent_client.livekit.embedded import EmbeddedGateway

__all__ = [
    "API_KEY_ENV",
    "EMBEDDED",
    "GATEWAY_ENV",
    "AvatarJoinError",
    "AvatarSession",
    "AvatarStreamError",
    "EmbeddedGateway",
    "GatewayAudioOutput",
]
