"""Gateway objects as avatar.v1 messages."""

from __future__ import annotations

from avatar.v1 import avatar_provider_pb2 as api_pb
from avatar.v1 import session_pb2 as pb
from google.protobuf import duration_pb2, timestamp_pb2

from gateway.session import AvatarSession
from providers.base import PcmFormat, ProviderInfo, VideoSpec


def duration(seconds: float) -> duration_pb2.Duration:
    """Seconds as a Duration."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def audio_format_pb(fmt: PcmFormat) -> pb.AudioFormat:
    """PcmFormat as the proto message."""
    return pb.AudioFormat(sample_rate_hz=fmt.sample_rate, channels=fmt.channels, encoding=pb.AUDIO_ENCODING_PCM16LE)


def epoch_ns(epoch_s: float) -> int:
    """Seconds since the epoch as the integer nanoseconds a Timestamp holds."""
    return round(epoch_s * 1e9)


def _timestamp(epoch_s: float | None) -> timestamp_pb2.Timestamp | None:
    if epoch_s is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(epoch_ns(epoch_s))
    return t


def video_pb(video: VideoSpec) -> pb.VideoFormat:
    """VideoSpec as the proto message."""
    return pb.VideoFormat(width=video.width, height=video.height, fps=video.fps)


def session_pb(s: AvatarSession) -> pb.Session:
    """A session's public view. Provider options are input-only and never echoed."""
    p = s.params
    book, media = s.book.stats, s.stats
    msg = pb.Session(
        name=s.name,
        provider=p.provider,
        room=pb.RoomTarget(url=p.room_url, room_name=p.room_name, agent_identity=p.agent_identity),
        avatar_id=p.avatar_id,
        video=video_pb(p.video),
        idle_timeout=duration(p.idle_timeout_s),
        max_duration=duration(p.max_duration_s),
        video_delay=duration(p.video_delay_s),
        audio_transport=int(p.audio_transport),  # type: ignore[arg-type]
        labels=p.labels,
        state=int(s.state),  # type: ignore[arg-type]
        avatar_identity=s.avatar_identity,
        provider_audio_format=audio_format_pb(s.provider_format),
        end_reason=int(s.end_reason),  # type: ignore[arg-type]
        end_detail=s.end_detail,
        stats=pb.SessionStats(
            segments_opened=book.opened,
            segments_finished=book.finished,
            segments_interrupted=book.interrupted,
            samples_played=media.samples_played,
            video_frames=media.video_frames,
            underruns=book.underruns,
            provider_time=duration(s.provider_seconds),
        ),
        failovers=[pb.Failover(provider=f.provider, reason=f.reason, detail=f.detail) for f in s.failovers],
    )
    for field, value in (("create_time", s.create_time), ("start_time", s.start_time), ("end_time", s.end_time)):
        ts = _timestamp(value)
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)
    return msg


def provider_pb(info: ProviderInfo) -> api_pb.ProviderInfo:
    """A provider's public description."""
    return api_pb.ProviderInfo(
        name=info.name,
        display_name=info.display_name,
        enabled=info.enabled,
        disabled_reason=info.disabled_reason,
        audio_format=audio_format_pb(info.audio_format),
        default_video=video_pb(info.default_video),
        max_session_duration=duration(info.max_session_seconds),
    )
