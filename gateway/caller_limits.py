"""Per-caller limits: how many sessions one principal may run at once, and how fast it may start them (a token
bucket per principal). Either is answered RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo. Principals come from
the configured API keys (or the one anonymous caller), so the table of buckets is bounded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway import errors

SLOT_RETRY_S = 1.0  # a session slot frees when one of the caller's sessions ends: no date to give, only a pace


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class CallerLimits:
    """`max_sessions` and `starts_per_minute` per principal; 0 means unlimited."""

    def __init__(self, max_sessions: int, starts_per_minute: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max_sessions = max_sessions
        self._rate = starts_per_minute / 60.0
        self._burst = float(starts_per_minute)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check_sessions(self, principal: str, owners: Iterable[str]) -> None:
        """RESOURCE_EXHAUSTED if `principal` already runs its most sessions (`owners`: of the running sessions,
        counted only when there is a limit)."""
        if self._max_sessions and sum(owner == principal for owner in owners) >= self._max_sessions:
            err = errors.resource_exhausted(
                f"this caller runs at most {self._max_sessions} sessions at once", "CALLER_SESSION_LIMIT",
                f"callers/{principal}/sessions", {"limit": str(self._max_sessions)})
            err.details.append(errors.retry_info(SLOT_RETRY_S))
            raise err

    def take_start(self, principal: str) -> None:
        """Count one StartSession; RESOURCE_EXHAUSTED (with when to retry) if the caller starts too fast."""
        if not self._rate:
            return
        now = self._clock()
        bucket = self._buckets.setdefault(principal, _Bucket(self._burst, now))
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            err = errors.resource_exhausted(
                f"this caller may start at most {self._burst:g} sessions a minute", "CALLER_START_RATE",
                f"callers/{principal}/starts", {"limit_per_minute": f"{self._burst:g}"})
            err.details.append(errors.retry_info((1.0 - bucket.tokens) / self._rate))
            raise err
        bucket.tokens -= 1.0
