"""Gateway configuration, from flags and environment. Secrets are never part of any repr or log line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.tls import TlsFiles


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller. `providers` empty means every provider."""

    principal: str
    providers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process is told."""

    listen: str = "127.0.0.1:50051"
    livekit_url: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = field(default="", repr=False)
    # other LiveKit servers the same key/secret is valid for, which StartSession may name
    livekit_extra_urls: tuple[str, ...] = ()
    # no LiveKit at all: sessions render, pace and account, and publish nowhere (development, benchmarks)
    headless: bool = False
    # API key -> caller; empty: no authentication (bind to loopback only)
    api_keys: Mapping[str, Caller] = field(default_factory=dict, repr=False)
    default_idle_timeout_s: float = 300.0
    default_max_duration_s: float = 3600.0
    max_sessions: int = 1000
    # per principal (API key's caller): sessions at once, StartSession calls a minute; 0: no limit
    max_sessions_per_caller: int = 0
    starts_per_minute_per_caller: int = 0
    max_buffered_s: float = 120.0
    # the most audio a publisher keeps queued ahead of playout; it keeps what its measured wake-ups need, from
    # 10 ms up (providers.lead)
    lead_ms: int = 100
    # default StartSessionRequest.video_delay: how much later than its audio video leaves the gateway
    video_delay_ms: int = 0
    shutdown_grace_s: float = 10.0
    start_timeout_s: float = 30.0
    ended_retention: int = 1000
    token_ttl_s: int = 3600
    max_message_bytes: int = 4 * 1024 * 1024
    max_chunk_bytes: int = 1024 * 1024
    log_json: bool = False
    # worker processes sharing the listen port (gateway.cluster)
    workers: int = 1
    # the gateway owns its process: at start, move what exists out of every later GC pass (gc.freeze). Off when
    # it is embedded in another program's process, whose objects are not the gateway's to freeze.
    owns_process: bool = True
    # TLS on the listen port (gateway.tls): certificate and key files; a client CA file makes it mutual TLS
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""

    def __post_init__(self) -> None:
        # a TLS combination that cannot serve is refused here, not when the server starts
        TlsFiles.from_paths(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @property
    def tls(self) -> TlsFiles | None:
        """The listen port's TLS material, None for plaintext; ValueError if incomplete."""
        return TlsFiles.from_paths(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @property
    def livekit_configured(self) -> bool:
        """True when sessions can join real rooms."""
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)


def parse_api_keys(spec: str) -> dict[str, Caller]:
    """`principal:key[:provider|provider...]` entries separated by commas."""
    keys: dict[str, Caller] = {}
    for number, entry in enumerate(filter(None, (e.strip() for e in spec.split(","))), start=1):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ValueError("each API key entry must be principal:key or principal:key:provider|provider")
        providers = frozenset(filter(None, parts[2].split("|"))) if len(parts) == 3 else frozenset()
        if parts[1] in keys:  # never name the key itself: it is a secret
            raise ValueError(f"AVATAR_GATEWAY_API_KEYS entry {number} ({parts[0]!r}) repeats the API key of "
                             f"{keys[parts[1]].principal!r}: every key must belong to one principal")
        keys[parts[1]] = Caller(parts[0], providers)
    return keys


def check_api_keys(api_keys: Mapping[str, Caller], providers: Iterable[str]) -> None:
    """ValueError if a key is limited to a provider this gateway does not know (a typo would lock it out)."""
    known = set(providers)
    for caller in api_keys.values():
        unknown = sorted(caller.providers - known)
        if unknown:
            raise ValueError(f"AVATAR_GATEWAY_API_KEYS: {caller.principal!r} is limited to unknown provider(s) "
                             f"{', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> GatewayConfig:
    """Configuration from the environment (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, AVATAR_GATEWAY_*),
    with explicit overrides (flags) on top."""
    env = os.environ if env is None else env
    values: dict[str, object] = {
        "listen": env.get("AVATAR_GATEWAY_LISTEN", GatewayConfig.listen),
        "livekit_url": env.get("LIVEKIT_URL", ""),
        "livekit_api_key": env.get("LIVEKIT_API_KEY", ""),
        "livekit_api_secret": env.get("LIVEKIT_API_SECRET", ""),
        "headless": _flag(env.get("AVATAR_GATEWAY_HEADLESS")),
        "api_keys": parse_api_keys(env.get("AVATAR_GATEWAY_API_KEYS", "")),
        "log_json": _flag(env.get("AVATAR_GATEWAY_LOG_JSON")),
        "video_delay_ms": int(env.get("AVATAR_GATEWAY_VIDEO_DELAY_MS", "0")),
        "workers": int(env.get("AVATAR_GATEWAY_WORKERS", "1")),
        "max_sessions_per_caller": int(env.get("AVATAR_GATEWAY_MAX_SESSIONS_PER_CALLER", "0")),
        "starts_per_minute_per_caller": int(env.get("AVATAR_GATEWAY_STARTS_PER_MINUTE_PER_CALLER", "0")),
        "tls_cert_file": env.get("AVATAR_GATEWAY_TLS_CERT", ""),
        "tls_key_file": env.get("AVATAR_GATEWAY_TLS_KEY", ""),
        "tls_client_ca_file": env.get("AVATAR_GATEWAY_TLS_CLIENT_CA", ""),
    }
    extra = env.get("AVATAR_GATEWAY_LIVEKIT_EXTRA_URLS", "")
    values["livekit_extra_urls"] = tuple(u.strip() for u in extra.split(",") if u.strip())
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = GatewayConfig(**values)  # type: ignore[arg-type]
    if not 1 <= config.workers <= 64:
        raise ValueError("workers must be 1 to 64")
    return config
