"""StartSession request checks: each failure is INVALID_ARGUMENT naming the field, in field order."""

from __future__ import annotations

import re
import uuid

from avatar.v1 import avatar_provider_pb2 as pb
from avatar.v1 import session_pb2
from google.protobuf import duration_pb2

from gateway import errors
from gateway.config import GatewayConfig
from gateway.session import AudioTransport
from providers.base import OptionError, ProviderAdapter, VideoSpec

SESSION_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
NAME = re.compile(r"^sessions/([a-z0-9][a-z0-9-]{0,62})$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
MAX_LABELS = 32
MAX_IDENTITY = 256
MAX_DURATION_S = 315_576_000_000  # the range of google.protobuf.Duration (about 10,000 years)


def session_id_from_name(name: str, field: str = "name") -> str:
    """`sessions/{id}` -> id, or INVALID_ARGUMENT."""
    m = NAME.fullmatch(name)
    if m is None:
        raise errors.invalid_argument(field, f"{field} must look like 'sessions/{{session}}', got {name[:80]!r}",
                                      "INVALID_SESSION_NAME")
    return m.group(1)


def check_request_id(request_id: str) -> str:
    """A canonical UUID, or INVALID_ARGUMENT."""
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        raise errors.invalid_argument("request_id", "request_id must be a UUID", "INVALID_REQUEST_ID") from None


def check_room(req: pb.StartSessionRequest, config: GatewayConfig) -> str:
    """The LiveKit URL the session will use."""
    room = req.room
    if not room.room_name:
        raise errors.invalid_argument("room.room_name", "room.room_name is required", "MISSING_FIELD")
    if len(room.room_name) > MAX_IDENTITY:
        raise errors.invalid_argument("room.room_name", "room.room_name is too long", "INVALID_ROOM")
    if not room.agent_identity:
        raise errors.invalid_argument("room.agent_identity", "room.agent_identity is required", "MISSING_FIELD")
    if len(room.agent_identity) > MAX_IDENTITY:
        raise errors.invalid_argument("room.agent_identity", "room.agent_identity is too long", "INVALID_ROOM")
    url = room.url or config.livekit_url
    if room.url and room.url not in (config.livekit_url, *config.livekit_extra_urls):
        raise errors.invalid_argument(
            "room.url", "room.url is not a LiveKit server this gateway is configured for; leave it empty to use "
            "the configured one", "UNKNOWN_LIVEKIT_SERVER")
    return url


def check_video(requested: pb.StartSessionRequest, adapter: ProviderAdapter) -> VideoSpec:
    """The video the session will publish."""
    v = requested.video
    video = adapter.resolve_video(VideoSpec(v.width, v.height, v.fps))
    if not (16 <= video.width <= 1920 and video.width % 2 == 0):
        raise errors.invalid_argument("video.width", "video.width must be even, 16 to 1920", "INVALID_VIDEO")
    if not (16 <= video.height <= 1080 and video.height % 2 == 0):
        raise errors.invalid_argument("video.height", "video.height must be even, 16 to 1080", "INVALID_VIDEO")
    if not 1 <= video.fps <= 60:
        raise errors.invalid_argument("video.fps", "video.fps must be 1 to 60", "INVALID_VIDEO")
    return video


def _seconds(d: duration_pb2.Duration, field: str) -> float:
    """A Duration in seconds, or INVALID_ARGUMENT if it is outside google.protobuf.Duration's range (such a value
    would be echoed back in the Session and break its serialization)."""
    if (abs(d.seconds) > MAX_DURATION_S or abs(d.nanos) >= 1_000_000_000
            or (d.seconds > 0 > d.nanos) or (d.seconds < 0 < d.nanos)):
        raise errors.invalid_argument(field, f"{field} is not a valid duration", "INVALID_DURATION")
    return d.ToNanoseconds() / 1e9


def check_timeouts(req: pb.StartSessionRequest, config: GatewayConfig, adapter: ProviderAdapter
                   ) -> tuple[float, float]:
    """(idle timeout, max duration) in seconds."""
    limit = adapter.info.max_session_seconds
    idle = _seconds(req.idle_timeout, "idle_timeout") if req.HasField("idle_timeout") else \
        config.default_idle_timeout_s
    longest = _seconds(req.max_duration, "max_duration") if req.HasField("max_duration") else min(
        config.default_max_duration_s, limit)
    if idle <= 0:
        raise errors.invalid_argument("idle_timeout", "idle_timeout must be positive", "INVALID_DURATION")
    if longest <= 0 or longest > limit:
        raise errors.invalid_argument(
            "max_duration", f"max_duration must be positive and at most {limit:g}s for provider "
            f"{adapter.info.name!r}", "INVALID_DURATION")
    return idle, longest


def check_video_delay(req: pb.StartSessionRequest, config: GatewayConfig) -> float:
    """The session's video delay in seconds."""
    if not req.HasField("video_delay"):
        return config.video_delay_ms / 1000
    delay = req.video_delay.ToNanoseconds() / 1e9
    if not 0 <= delay <= 0.5:
        raise errors.invalid_argument("video_delay", "video_delay must be 0 to 500 ms", "INVALID_DURATION")
    return delay


def check_audio_transport(req: pb.StartSessionRequest, config: GatewayConfig) -> AudioTransport:
    """Where the session takes its speech from: StreamAudio unless the room transport was asked for."""
    value = req.audio_transport
    if value in (session_pb2.AUDIO_TRANSPORT_UNSPECIFIED, session_pb2.AUDIO_TRANSPORT_GRPC):
        return AudioTransport.GRPC
    if value != session_pb2.AUDIO_TRANSPORT_ROOM:
        raise errors.invalid_argument("audio_transport", f"unknown audio_transport {value}",
                                      "UNKNOWN_AUDIO_TRANSPORT")
    if config.headless:
        raise errors.invalid_argument("audio_transport", "AUDIO_TRANSPORT_ROOM needs the avatar in a room; this "
                                      "gateway runs headless", "ROOM_TRANSPORT_UNAVAILABLE")
    return AudioTransport.ROOM


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Labels within their limits."""
    if len(labels) > MAX_LABELS:
        raise errors.invalid_argument("labels", f"at most {MAX_LABELS} labels", "INVALID_LABELS")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise errors.invalid_argument(f"labels[{key[:64]}]", "label keys are 1-63 chars of [a-z0-9_.-], "
                                          "starting with a letter", "INVALID_LABELS")
        if len(value) > 256:
            raise errors.invalid_argument(f"labels[{key}]", "label values are at most 256 chars",
                                          "INVALID_LABELS")
    return dict(labels)


def check_options(req: pb.StartSessionRequest, adapter: ProviderAdapter) -> None:
    """Provider-specific option checks."""
    try:
        adapter.validate_options(req.avatar_id, req.provider_options)
    except OptionError as exc:
        raise errors.invalid_argument(exc.field, str(exc), "INVALID_PROVIDER_OPTION") from None


def check_session_id(session_id: str) -> str:
    """A caller-chosen session id, or INVALID_ARGUMENT."""
    if not SESSION_ID.fullmatch(session_id):
        raise errors.invalid_argument("session_id", "session_id must be 1-63 chars of [a-z0-9-], starting with a "
                                      "letter", "INVALID_SESSION_ID")
    return session_id
