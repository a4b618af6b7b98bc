import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCM16LE: _ClassVar[AudioEncoding]

class AudioTransport(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_TRANSPORT_UNSPECIFIED: _ClassVar[AudioTransport]
    AUDIO_TRANSPORT_GRPC: _ClassVar[AudioTransport]
    AUDIO_TRANSPORT_ROOM: _ClassVar[AudioTransport]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_STARTING: _ClassVar[SessionState]
    SESSION_STATE_ACTIVE: _ClassVar[SessionState]
    SESSION_STATE_ENDING: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]
    SESSION_STATE_FAILED: _ClassVar[SessionState]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_CLIENT_REQUEST: _ClassVar[EndReason]
    END_REASON_IDLE_TIMEOUT: _ClassVar[EndReason]
    END_REASON_MAX_DURATION: _ClassVar[EndReason]
    END_REASON_PROVIDER_ERROR: _ClassVar[EndReason]
    END_REASON_SERVER_SHUTDOWN: _ClassVar[EndReason]
    END_REASON_ROOM_DISCONNECTED: _ClassVar[EndReason]
    END_REASON_START_FAILED: _ClassVar[EndReason]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_PCM16LE: AudioEncoding
AUDIO_TRANSPORT_UNSPECIFIED: AudioTransport
AUDIO_TRANSPORT_GRPC: AudioTransport
AUDIO_TRANSPORT_ROOM: AudioTransport
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_STARTING: SessionState
SESSION_STATE_ACTIVE: SessionState
SESSION_STATE_ENDING: SessionState
SESSION_STATE_ENDED: SessionState
SESSION_STATE_FAILED: SessionState
END_REASON_UNSPECIFIED: EndReason
END_REASON_CLIENT_REQUEST: EndReason
END_REASON_IDLE_TIMEOUT: EndReason
END_REASON_MAX_DURATION: EndReason
END_REASON_PROVIDER_ERROR: EndReason
END_REASON_SERVER_SHUTDOWN: EndReason
END_REASON_ROOM_DISCONNECTED: EndReason
END_REASON_START_FAILED: EndReason

class Session(_message.Message):
    __slots__ = ("name", "provider", "room", "avatar_id", "video", "idle_timeout", "max_duration", "labels", "state", "avatar_identity", "provider_audio_format", "create_time", "start_time", "end_time", "end_reason", "end_detail", "stats", "video_delay", "audio_transport", "failovers")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AVATAR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    END_DETAIL_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_DELAY_FIELD_NUMBER: _ClassVar[int]
    AUDIO_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    FAILOVERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider: str
    room: RoomTarget
    avatar_id: str
    video: VideoFormat
    idle_timeout: _duration_pb2.Duration
    max_duration: _duration_pb2.Duration
    labels: _containers.ScalarMap[str, str]
    state: SessionState
    avatar_identity: str
    provider_audio_format: AudioFormat
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    end_reason: EndReason
    end_detail: str
    stats: SessionStats
    video_delay: _duration_pb2.Duration
    audio_transport: AudioTransport
    failovers: _containers.RepeatedCompositeFieldContainer[Failover]
    def __init__(self, name: _Optional[str] = ..., provider: _Optional[str] = ..., room: _Optional[_Union[RoomTarget, _Mapping]] = ..., avatar_id: _Optional[str] = ..., video: _Optional[_Union[VideoFormat, _Mapping]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[SessionState, str]] = ..., avatar_identity: _Optional[str] = ..., provider_audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., end_detail: _Optional[str] = ..., stats: _Optional[_Union[SessionStats, _Mapping]] = ..., video_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., audio_transport: _Optional[_Union[AudioTransport, str]] = ..., failovers: _Optional[_Iterable[_Union[Failover, _Mapping]]] = ...) -> None: ...

class Failover(_message.Message):
    __slots__ = ("provider", "reason", "detail")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    provider: str
    reason: str
    detail: str
    def __init__(self, provider: _Optional[str] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RoomTarget(_message.Message):
    __slots__ = ("url", "room_name", "agent_identity")
    URL_FIELD_NUMBER: _ClassVar[int]
    ROOM_NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    url: str
    room_name: str
    agent_identity: str
    def __init__(self, url: _Optional[str] = ..., room_name: _Optional[str] = ..., agent_identity: _Optional[str] = ...) -> None: ...

class VideoFormat(_message.Message):
    __slots__ = ("width", "height", "fps")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    fps: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ...) -> None: ...

class AudioFormat(_message.Message):
    __slots__ = ("sample_rate_hz", "channels", "encoding")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    channels: int
    encoding: AudioEncoding
    def __init__(self, sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ...) -> None: ...

class SessionStats(_message.Message):
    __slots__ = ("segments_opened", "segments_finished", "segments_interrupted", "samples_played", "video_frames", "underruns", "provider_time")
    SEGMENTS_OPENED_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FINISHED_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PLAYED_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FRAMES_FIELD_NUMBER: _ClassVar[int]
    UNDERRUNS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TIME_FIELD_NUMBER: _ClassVar[int]
    segments_opened: int
    segments_finished: int
    segments_interrupted: int
    samples_played: int
    video_frames: int
    underruns: int
    provider_time: _duration_pb2.Duration
    def __init__(self, segments_opened: _Optional[int] = ..., segments_finished: _Optional[int] = ..., segments_interrupted: _Optional[int] = ..., samples_played: _Optional[int] = ..., video_frames: _Optional[int] = ..., underruns: _Optional[int] = ..., provider_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
