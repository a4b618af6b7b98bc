"""The constants of Simli's P2P wire protocol (simli-ai 2.1.0), as the fake speaks it.

The client's side of it lives in ``simli/transports/base_transport.py`` and ``p2p_transport.py``:

* ``POST /compose/token`` (header ``x-simli-api-key``, body ``SimliConfig.toRequest()``) ->
  ``{"session_token", "warnings"}``; ``GET /compose/ice`` -> a list of ``RTCIceServer`` kwargs.
* WebSocket ``/compose/webrtc/p2p?enableSFU=True&session_token=<token>``: the client sends its offer as JSON, the
  server answers with JSON (``sdp``, ``type``), then the text ``START``. Then binary messages are PCM16 LE mono
  16 kHz audio, ``b"DONE"`` ends the session, ``b"PLAY_IMMEDIATE" + pcm`` plays at once, ``b"CAM_..."`` moves the
  camera; text ``SKIP`` drops the queued audio, ``BG_<id>`` / ``FG_<id>`` pick a background / foreground.
* The server's text messages: ``START``, ``SPEAK``, ``SILENT``, ``CLOSING REASON: <reason>`` then ``STOP``,
  ``ERROR: <message>``, ``RATE LIMIT...``, notices (``WARNING: ...``, ``pong``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

TOKEN_PATH: Final = "/compose/token"
ICE_PATH: Final = "/compose/ice"
P2P_PATH: Final = "/compose/webrtc/p2p"
API_KEY_HEADER: Final = "x-simli-api-key"

# Input audio: what SimliClient.send() must be given.
INPUT_RATE: Final = 16000
INPUT_SAMPLE_BYTES: Final = 2

# Output audio: what aiortc's Opus encoder takes without resampling (20 ms, s16, stereo, 48 kHz).
OUTPUT_RATE: Final = 48000
OUTPUT_CHANNELS: Final = 2
AUDIO_FRAME_MS: Final = 20
INPUT_SAMPLES_PER_AUDIO_FRAME: Final = INPUT_RATE * AUDIO_FRAME_MS // 1000  # 320
OUTPUT_SAMPLES_PER_AUDIO_FRAME: Final = OUTPUT_RATE * AUDIO_FRAME_MS // 1000  # 960
UPSAMPLE: Final = OUTPUT_RATE // INPUT_RATE  # 3
VIDEO_CLOCK_RATE: Final = 90000

# Client -> server.
DONE: Final = b"DONE"
PLAY_IMMEDIATE: Final = b"PLAY_IMMEDIATE"
CAMERA_PREFIX: Final = b"CAM_"
SKIP: Final = "SKIP"
BACKGROUND_PREFIX: Final = "BG_"
FOREGROUND_PREFIX: Final = "FG_"
PING: Final = "ping"

# Server -> client.
START: Final = "START"
STOP: Final = "STOP"
SPEAK: Final = "SPEAK"
SILENT: Final = "SILENT"
PONG: Final = "pong"
RATE_LIMIT: Final = "RATE LIMIT"
CLOSING_REASON: Final = "CLOSING REASON: "
ERROR_PREFIX: Final = "ERROR: "

# HTTP error details the client maps to SimliExceptions codes (SimliExceptions.fromServerMessage).
INVALID_API_KEY: Final = "INVALID_API_KEY"
INVALID_FACE_ID: Final = "INVALID_FACE_ID"
INVALID_SESSION_TOKEN: Final = "Invalid session token"


class StopCause(StrEnum):
    """Why a fake Simli session ended: the first cause wins."""

    DONE = "DONE"  # the client sent DONE (SimliClient.stop())
    IDLE = "IDLE"  # maxIdleTime with no audio message: CLOSING REASON: IDLE, STOP
    MAX = "MAX"  # maxSessionLength: CLOSING REASON: MAX, STOP
    ERROR = "ERROR"  # the fake sent ERROR: ... or RATE LIMIT (mid-session or instead of START)
    KILLED = "KILLED"  # the fake closed its peer connection, the websocket staying open (FakeSimliSession.kill_webrtc)
    ABORTED = "ABORTED"  # the fake dropped the websocket abruptly (FakeSimliSession.abort_websocket)
    CLIENT_GONE = "CLIENT_GONE"  # the websocket closed without DONE
    SERVER_CLOSED = "SERVER_CLOSED"  # FakeSimli.close(), or FakeSimliSession.end() with another reason
