"""A local fake of Simli's P2P service that drives the REAL ``simli-ai`` 2.1.0 client.

``FakeSimli`` serves ``POST /compose/token``, ``GET /compose/ice`` and the websocket
``/compose/webrtc/p2p``; each websocket is a ``FakeSimliSession``: an aiortc peer connection sending Opus audio
(exactly the PCM the client queued, 48 kHz stereo, silence when idle) and VP8 video of
``providers.mock.face.FaceRenderer``'s face, whose mouth follows the loudness of the audio played at the same moment
(one clock for both tracks). WebRTC needs the network namespace of ``scripts/netns-run`` (``loopback.loopback_host()``).
"""

from .playout import Playout
from .protocol import StopCause
from .server import FakeSimli, InjectedFailure, TokenRequest
from .session import FakeSimliSession, ReceivedMessage, SessionOptions
from .token_request import SessionParams

__all__ = [
    "FakeSimli",
    "FakeSimliSession",
    "InjectedFailure",
    "Playout",
    "ReceivedMessage",
    "SessionOptions",
    "SessionParams",
    "StopCause",
    "TokenRequest",
]
