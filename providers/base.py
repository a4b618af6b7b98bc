"""The adapter interface every avatar provider implements.

A framed provider turns the agent's speech audio into avatar frames: video frames, each with exactly the audio that
plays alongside it (the mock renders them; a stream-pair provider such as Simli pairs the audio and video streams
its vendor sends back). The shared room publisher (`providers.room_publisher`) paces those frames into the LiveKit
room and derives the playback events from what actually played out, so no provider touches LiveKit or does its own
playback accounting. How a session's media flows is its pipeline (`providers.pipeline`); an adapter picks its
pipeline in `ProviderAdapter.pipeline`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from livekit import rtc

if TYPE_CHECKING:
    from providers.pipeline import MediaPipeline, PipelineParts


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """Interleaved PCM16 audio format."""

    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class VideoSpec:
    """Video the avatar publishes."""

    width: int
    height: int
    fps: int


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """The LiveKit room an avatar joins and the credentials it joins with."""

    url: str
    room_name: str
    agent_identity: str
    avatar_identity: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What a provider adapter is and what it needs."""

    name: str
    display_name: str
    audio_format: PcmFormat
    default_video: VideoSpec
    max_session_seconds: float
    enabled: bool = True
    disabled_reason: str = ""
    needs_subscribe: bool = False
    # False: the vendor's own worker joins the room and publishes the avatar; the gateway's participant only
    # relays the agent's speech to it (the room-native shape)
    gateway_publishes: bool = True


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """Everything a provider needs to start one session."""

    session_id: str
    avatar_id: str
    options: Mapping[str, str]
    video: VideoSpec
    room: RoomSpec


@dataclass(slots=True)
class AvatarFrame:
    """One video frame and exactly the audio that plays with it.

    `audio` is int16 interleaved at the session's output format. Its first `segment_samples` samples per channel
    belong to segment `segment_id` (0 = no segment: idle); the rest is silence. `segment_done` marks the frame that
    carries the segment's last audio (or, for an empty segment, its only mark); with `segment_cut` the segment was
    cut short by the provider and finishes interrupted.
    """

    video: rtc.VideoFrame
    audio: np.ndarray
    segment_id: int = 0
    segment_samples: int = 0
    segment_done: bool = False
    underrun: bool = False
    segment_cut: bool = False
    arrived: float | None = None  # stream-pair frames: when the vendor's first sample of it reached the gateway


class ProviderFault(enum.Enum):
    """What kind of failure a provider error is; it decides the status the agent gets."""

    BAD_REQUEST = enum.auto()  # the provider refused what the agent asked for (an unknown face id): INVALID_ARGUMENT
    PRECONDITION = enum.auto()  # the provider account cannot serve (billing): FAILED_PRECONDITION
    AUTH = enum.auto()  # the provider refused the gateway's own credentials: INTERNAL, reason PROVIDER_AUTH_FAILED
    UNAVAILABLE = enum.auto()  # outage, timeout, network: UNAVAILABLE with RetryInfo
    QUOTA = enum.auto()  # the provider's concurrency or rate limit: RESOURCE_EXHAUSTED with RetryInfo
    IDLE = enum.auto()  # the provider closed a session left idle: it ends as the gateway's idle timeout would
    INTERNAL = enum.auto()  # anything else: INTERNAL "Internal error."


class ProviderError(Exception):
    """A provider failed. `fault` decides the gRPC status, `reason` is the ErrorInfo reason.

    The message must never contain credentials; for BAD_REQUEST, PRECONDITION, UNAVAILABLE and QUOTA it is shown to
    the caller (and in Session.end_detail), for AUTH and INTERNAL it is only logged.
    """

    def __init__(self, message: str, *, fault: ProviderFault, reason: str = "PROVIDER_ERROR",
                 retry_after_s: float = 2.0, field: str = "avatar_id") -> None:
        super().__init__(message)
        self.message = message
        self.fault = fault
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.field = field  # the request field a BAD_REQUEST names

    @property
    def retryable(self) -> bool:
        """Whether trying again later may help."""
        return self.fault in (ProviderFault.UNAVAILABLE, ProviderFault.QUOTA)

    @classmethod
    def unavailable(cls, message: str, reason: str = "PROVIDER_UNAVAILABLE", retry_after_s: float = 2.0
                    ) -> ProviderError:
        """Outage, timeout, network failure."""
        return cls(message, fault=ProviderFault.UNAVAILABLE, reason=reason, retry_after_s=retry_after_s)

    @classmethod
    def bad_request(cls, message: str, reason: str, field: str = "avatar_id") -> ProviderError:
        """The provider refused the request's `field`."""
        return cls(message, fault=ProviderFault.BAD_REQUEST, reason=reason, field=field)

    @classmethod
    def precondition(cls, message: str, reason: str) -> ProviderError:
        """The provider account cannot serve now (billing, account state)."""
        return cls(message, fault=ProviderFault.PRECONDITION, reason=reason)

    @classmethod
    def auth(cls, message: str) -> ProviderError:
        """The provider refused the gateway's credentials."""
        return cls(message, fault=ProviderFault.AUTH, reason="PROVIDER_AUTH_FAILED")

    @classmethod
    def quota(cls, message: str, reason: str, retry_after_s: float = 5.0) -> ProviderError:
        """A provider-side limit."""
        return cls(message, fault=ProviderFault.QUOTA, reason=reason, retry_after_s=retry_after_s)

    @classmethod
    def idle_closed(cls, message: str) -> ProviderError:
        """The provider closed the session because it had no audio for too long."""
        return cls(message, fault=ProviderFault.IDLE, reason="PROVIDER_IDLE_TIMEOUT")

    @classmethod
    def internal(cls, message: str, reason: str = "PROVIDER_ERROR") -> ProviderError:
        """Anything else."""
        return cls(message, fault=ProviderFault.INTERNAL, reason=reason)


class OptionError(ValueError):
    """A provider option is invalid. `option` names the offending key; `field` the request field, when the problem
    is not in provider_options (for example avatar_id)."""

    def __init__(self, option: str, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.option = option
        self.field = field or f"provider_options[{option[:64]}]"


class ProviderSession(ABC):
    """One running framed provider session."""

    @property
    @abstractmethod
    def output_format(self) -> PcmFormat:
        """Format of `AvatarFrame.audio`."""

    @property
    def input_format(self) -> PcmFormat:
        """Format `push_audio` takes (the gateway resamples the agent's audio to it); by default the output's."""
        return self.output_format

    @property
    @abstractmethod
    def video(self) -> VideoSpec:
        """Size and rate of the frames."""

    @abstractmethod
    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        """Queue int16 interleaved audio (in the provider's input format) for segment `segment_id`."""

    @abstractmethod
    async def end_segment(self, segment_id: int) -> None:
        """No more audio will come for `segment_id` (which may have had none)."""

    @abstractmethod
    async def clear(self) -> None:
        """Drop every queued sample and segment now; the next frame is idle."""

    @abstractmethod
    def frames(self) -> AsyncIterator[AvatarFrame]:
        """Frames, forever, at the pace the consumer pulls them; idle frames with silence when there is no audio.

        Ends only when the session is closed or fails (then it raises ProviderError).
        """

    def stream_attached(self, attached: bool) -> None:  # noqa: B027
        """An agent's audio stream was attached to (True) or detached from (False) the session."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop the provider session and release everything. Idempotent."""


class ProviderAdapter(ABC):
    """A provider: describes itself, validates options, starts sessions."""

    @property
    @abstractmethod
    def info(self) -> ProviderInfo:
        """Name, formats, limits, whether it is enabled."""

    def resolve_video(self, requested: VideoSpec) -> VideoSpec:
        """The video a session will publish: zero fields take the provider's defaults."""
        d = self.info.default_video
        return VideoSpec(requested.width or d.width, requested.height or d.height, requested.fps or d.fps)

    async def warm_up(self) -> None:  # noqa: B027
        """Prepare what the first session would otherwise wait for (called once when the gateway starts)."""

    def validate_options(self, avatar_id: str, options: Mapping[str, str]) -> None:
        """Raise OptionError for an unknown or invalid option. Default: accept none."""
        for key in options:
            raise OptionError(key, f"unknown option {key!r} for provider {self.info.name!r}")

    @abstractmethod
    async def start(self, spec: SessionSpec) -> ProviderSession:
        """Start a provider session; raise ProviderError if the provider cannot."""

    def pipeline(self, parts: PipelineParts) -> MediaPipeline:
        """The pipeline a session of this provider runs. Default: frames from `start` published by the gateway."""
        from providers.pipeline import PublishedPipeline

        return PublishedPipeline(self, parts)
