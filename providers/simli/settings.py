"""Simli's settings: the gateway's key and default face from the environment, a session's options from
StartSession's `provider_options`. Light: nothing here imports the Simli client."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.base import OptionError, PcmFormat, ProviderInfo, VideoSpec

DEFAULT_URL = "https://api.simli.ai"
SIMLI_INPUT = PcmFormat(16000, 1)  # what Simli's send() takes: anything else breaks lip sync
SIMLI_OUTPUT = PcmFormat(48000, 1)  # Simli sends 48 kHz stereo Opus; the voice is mono, published as such

SIMLI_INFO = ProviderInfo(
    name="simli",
    display_name="Simli (lip-synced avatar over WebRTC, republished by the gateway)",
    audio_format=SIMLI_INPUT,
    default_video=VideoSpec(width=512, height=512, fps=30),
    # Simli caps one of its sessions (max_session_length); the gateway renews them, so a gateway session may be
    # longer than one Simli session
    max_session_seconds=4 * 3600.0,
)

_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
OPTIONS = {
    "max_session_length": "seconds one Simli session may last (10-3600; default 600); the gateway renews it",
    "max_idle_time": "seconds Simli waits without audio before it closes (5-600; default 30)",
    "handle_silence": "Simli keeps sending idle video and silence when it has no audio (only true: the gateway "
                      "paces Simli's media by the audio Simli sends)",
    "streaming_width": "Trinity-2 faces: video width, 512-1920 (with streaming_height 1:1, 16:9 or 9:16)",
    "streaming_height": "Trinity-2 faces: video height, 512-1920",
    "background_id": "Trinity-2 faces: one of your uploaded backgrounds, by id (a UUID)",
}
_RANGES = {"max_session_length": (10, 3600), "max_idle_time": (5, 600), "streaming_width": (512, 1920),
           "streaming_height": (512, 1920)}
_RATIOS = ((1, 1), (16, 9), (9, 16))


@dataclass(frozen=True, slots=True)
class SimliSettings:
    """The gateway's Simli account."""

    api_key: str = field(repr=False)
    face_id: str = ""  # default face when StartSession's avatar_id is empty
    url: str = DEFAULT_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimliSettings | None:
        """SIMLI_API_KEY (required), SIMLI_FACE_ID, SIMLI_URL; None without a key."""
        key = env.get("SIMLI_API_KEY", "").strip()
        if not key:
            return None
        return cls(api_key=key, face_id=env.get("SIMLI_FACE_ID", "").strip(),
                   url=env.get("SIMLI_URL", "").strip().rstrip("/") or DEFAULT_URL)


@dataclass(frozen=True, slots=True)
class SimliOptions:
    """One session's Simli options, validated."""

    max_session_length: int = 600
    max_idle_time: int = 30
    handle_silence: bool = True
    streaming_width: int | None = None
    streaming_height: int | None = None
    background_id: str | None = None

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> SimliOptions:
        """The options, or OptionError naming the first bad key."""
        values: dict[str, object] = {}
        for key, raw in options.items():
            if key not in OPTIONS:
                raise OptionError(key, f"unknown option {key!r}; the simli provider knows {sorted(OPTIONS)}")
            value = raw.strip()
            if key == "handle_silence":
                if value.lower() not in _BOOL:
                    raise OptionError(key, "option 'handle_silence' must be true or false")
                if not _BOOL[value.lower()]:
                    raise OptionError(key, "option 'handle_silence' must stay true: the gateway paces Simli's "
                                           "video by the audio Simli sends, which stops while Simli is silent")
                values[key] = True
            elif key == "background_id":
                if not _UUID.fullmatch(value):
                    raise OptionError(key, "option 'background_id' must be the UUID of an uploaded background")
                values[key] = str(uuid.UUID(value))
            else:
                low, high = _RANGES[key]
                if not value.isdigit() or not low <= int(value) <= high:
                    raise OptionError(key, f"option {key!r} must be an integer from {low} to {high}")
                values[key] = int(value)
        parsed = cls(**values)  # type: ignore[arg-type]
        width, height = parsed.streaming_width, parsed.streaming_height
        if (width is None) != (height is None):
            missing = "streaming_height" if height is None else "streaming_width"
            raise OptionError(missing, "streaming_width and streaming_height go together")
        if width is not None and height is not None and not any(width * b == height * a for a, b in _RATIOS):
            raise OptionError("streaming_width", "streaming_width:streaming_height must be 1:1, 16:9 or 9:16")
        return parsed
