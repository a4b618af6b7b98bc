"""The adapter interface every avatar provider implements.

A provider turns the agent's speech audio into avatar frames: video frames, each with exactly the audio that plays
alongside it. The shared room publisher (`providers.room_publisher`) paces those frames into the LiveKit room and
derives the playback events from what actually played out, so no provider touches LiveKit or does its own
playback accounting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc


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
    carries the segment's last audio (or, for an empty segment, its only mark).
    """

    video: rtc.VideoFrame
    audio: np.ndarray
    segment_id: int = 0
    segment_samples: int = 0
    segment_done: bool = False
    underrun: bool = False


class ProviderError(Exception):
    """A provider failed. `retryable` tells the caller whether trying again may help.

    The message must never contain credentials; it may be shown to the caller.
    """

    def __init__(self, message: str, *, retryable: bool, reason: str = "PROVIDER_ERROR") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason


class OptionError(ValueError):
    """A provider option is invalid. `option` names the offending key."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class ProviderSession(ABC):
    """One running provider session."""

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
