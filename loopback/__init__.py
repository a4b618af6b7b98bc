"""A LiveKit-compatible DEVELOPMENT server, for tests and local development only.

It speaks enough of livekit-server's protocol for the real ``livekit.rtc`` SDK (``Room.connect``, both the
``/rtc/v1`` single-peer-connection path and the ``/rtc`` fallback), publishing and subscribing audio and
video (RTP forwarded to subscribers as livekit-server does: nothing decoded or re-encoded, sender
reports and keyframe requests relayed, a participant's camera and microphone in one media stream), data
packets (so byte streams and RPC work), access-token checks and the RoomService Twirp API. It is not a
media server to deploy: users run the real livekit-server or LiveKit Cloud, and every end-to-end test
should also be able to run against one of those.

WebRTC needs a non-loopback interface: run it inside the network namespace ``scripts/netns-run`` makes.
"""

from .netns import in_namespace, loopback_host, not_in_namespace_reason
from .server import DowntrackState, LoopbackServer, ParticipantState, RoomState, ServerState, TrackState

__all__ = [
    "DowntrackState",
    "LoopbackServer",
    "ParticipantState",
    "RoomState",
    "ServerState",
    "TrackState",
    "in_namespace",
    "loopback_host",
    "not_in_namespace_reason",
]
