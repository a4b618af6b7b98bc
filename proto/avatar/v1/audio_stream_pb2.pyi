import datetime

from avatar.v1 import session_pb2 as _session_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamAudioRequest(_message.Message):
    __slots__ = ("config", "audio", "segment_end", "clear_buffer")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_END_FIELD_NUMBER: _ClassVar[int]
    CLEAR_BUFFER_FIELD_NUMBER: _ClassVar[int]
    config: StreamAudioConfig
    audio: AudioChunk
    segment_end: SegmentEnd
    clear_buffer: ClearBuffer
    def __init__(self, config: _Optional[_Union[StreamAudioConfig, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., segment_end: _Optional[_Union[SegmentEnd, _Mapping]] = ..., clear_buffer: _Optional[_Union[ClearBuffer, _Mapping]] = ...) -> None: ...

class StreamAudioConfig(_message.Message):
    __slots__ = ("session", "format")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    session: str
    format: _session_pb2.AudioFormat
    def __init__(self, session: _Optional[str] = ..., format: _Optional[_Union[_session_pb2.AudioFormat, _Mapping]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("pcm",)
    PCM_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    def __init__(self, pcm: _Optional[bytes] = ...) -> None: ...

class SegmentEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClearBuffer(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamAudioResponse(_message.Message):
    __slots__ = ("ready", "playback_started", "playback_finished", "warning", "go_away", "session_ended", "error")
    READY_FIELD_NUMBER: _ClassVar[int]
    PLAYBACK_STARTED_FIELD_NUMBER: _ClassVar[int]
    PLAYBACK_FINISHED_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    GO_AWAY_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ready: StreamReady
    playback_started: PlaybackStarted
    playback_finished: PlaybackFinished
    warning: StreamWarning
    go_away: GoAway
    session_ended: SessionEnded
    error: _status_pb2.Status
    def __init__(self, ready: _Optional[_Union[StreamReady, _Mapping]] = ..., playback_started: _Optional[_Union[PlaybackStarted, _Mapping]] = ..., playback_finished: _Optional[_Union[PlaybackFinished, _Mapping]] = ..., warning: _Optional[_Union[StreamWarning, _Mapping]] = ..., go_away: _Optional[_Union[GoAway, _Mapping]] = ..., session_ended: _Optional[_Union[SessionEnded, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class StreamReady(_message.Message):
    __slots__ = ("session", "input_format", "provider_format", "max_buffered_ms")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MAX_BUFFERED_MS_FIELD_NUMBER: _ClassVar[int]
    session: str
    input_format: _session_pb2.AudioFormat
    provider_format: _session_pb2.AudioFormat
    max_buffered_ms: int
    def __init__(self, session: _Optional[str] = ..., input_format: _Optional[_Union[_session_pb2.AudioFormat, _Mapping]] = ..., provider_format: _Optional[_Union[_session_pb2.AudioFormat, _Mapping]] = ..., max_buffered_ms: _Optional[int] = ...) -> None: ...

class PlaybackStarted(_message.Message):
    __slots__ = ("segment_id",)
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    segment_id: int
    def __init__(self, segment_id: _Optional[int] = ...) -> None: ...

class PlaybackFinished(_message.Message):
    __slots__ = ("segment_id", "playback_position", "interrupted")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYBACK_POSITION_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    segment_id: int
    playback_position: _duration_pb2.Duration
    interrupted: bool
    def __init__(self, segment_id: _Optional[int] = ..., playback_position: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., interrupted: _Optional[bool] = ...) -> None: ...

class StreamWarning(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GoAway(_message.Message):
    __slots__ = ("time_left",)
    TIME_LEFT_FIELD_NUMBER: _ClassVar[int]
    time_left: _duration_pb2.Duration
    def __init__(self, time_left: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SessionEnded(_message.Message):
    __slots__ = ("reason", "detail")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: _session_pb2.EndReason
    detail: str
    def __init__(self, reason: _Optional[_Union[_session_pb2.EndReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...
