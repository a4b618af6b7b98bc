"""Secrets from files, as container platforms mount them: `NAME_FILE=/run/secrets/x` gives `NAME` the file's
contents (its trailing newline dropped). Setting both `NAME` and `NAME_FILE` is an error, never a silent choice."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path

from providers.room_native.vendors import VENDORS

# every secret the gateway and its providers read from the environment
SECRET_NAMES = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "AVATAR_GATEWAY_API_KEYS", "SIMLI_API_KEY",
                *sorted({vendor.key_env for vendor in VENDORS} - {"SIMLI_API_KEY"}))


def load_file_secrets(env: MutableMapping[str, str]) -> None:
    """Replace each `NAME_FILE` of SECRET_NAMES in `env` by `NAME`; ValueError if a file cannot be read or
    `NAME` is set as well. The message names the variable and the path, never the contents."""
    for name in SECRET_NAMES:
        path = env.get(f"{name}_FILE")
        if path is None:
            continue
        if env.get(name):
            raise ValueError(f"both {name} and {name}_FILE are set: set one")
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise ValueError(f"{name}_FILE: cannot read {path}: {reason}") from None
        env[name] = value
        del env[f"{name}_FILE"]  # child processes (workers) get the value, as if it had been set directly
