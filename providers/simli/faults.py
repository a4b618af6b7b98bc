"""Simli's errors as provider errors of the right class. Simli's own messages can carry request details, so the
caller sees a message of ours (with Simli's validation detail where it is about the request)."""

from __future__ import annotations

import re

from simli.critical_exceptions import (
    SimliAPIError,
    SimliConnectionError,
    SimliError,
    SimliExceptions,
    SimliSessionError,
)

from providers.base import ProviderError

_AUTH = (SimliExceptions.INVALID_API_KEY,)
_BILLING = (SimliExceptions.BILLING_ERROR, SimliExceptions.MISSING_BILLING_INFO)


def start_failure(exc: SimliError, face_id: str) -> ProviderError:
    """The provider error for a failed start."""
    if isinstance(exc, SimliAPIError):
        return _http_failure(exc, face_id)
    if isinstance(exc, SimliSessionError):
        return _session_failure(exc, face_id)
    if isinstance(exc, SimliConnectionError):
        return ProviderError.unavailable("Simli could not be reached", "SIMLI_UNREACHABLE")
    return ProviderError.internal(f"Simli failed: {_redacted(exc.message)}", "SIMLI_ERROR")


def _http_failure(exc: SimliAPIError, face_id: str) -> ProviderError:
    status, code = exc.status_code, exc.code
    if status in (401, 403) or code in _AUTH:
        return ProviderError.auth(f"Simli refused the API key (HTTP {status})")
    if status == 402 or code in _BILLING:
        return ProviderError.precondition("Simli refused to start a session for billing reasons: "
                                          f"{_short(exc.detail)}", "PROVIDER_BILLING")
    if code is SimliExceptions.INVALID_FACE_ID:
        return _bad_face(face_id)
    if status == 429:
        return ProviderError.quota("Simli's rate limit was reached", "PROVIDER_RATE_LIMITED")
    if status >= 500:
        return ProviderError.unavailable(f"Simli is unavailable (HTTP {status})", "PROVIDER_UNAVAILABLE")
    if status in (400, 404, 422):
        return ProviderError.bad_request(f"Simli refused the session's settings: {_short(exc.detail)}",
                                         "PROVIDER_REJECTED_REQUEST", field="provider_options")
    return ProviderError.internal(f"Simli answered HTTP {status}", "SIMLI_HTTP_ERROR")


def _session_failure(exc: SimliSessionError, face_id: str) -> ProviderError:
    code = exc.code
    if code in _AUTH:
        return ProviderError.auth("Simli refused the API key")
    if code in _BILLING:
        return ProviderError.precondition("Simli refused to start a session for billing reasons",
                                          "PROVIDER_BILLING")
    if code is SimliExceptions.INVALID_FACE_ID:
        return _bad_face(face_id)
    if "RATE" in exc.message.upper():
        return ProviderError.quota("Simli's rate limit was reached", "PROVIDER_RATE_LIMITED")
    return ProviderError.unavailable(f"Simli refused to start the session: {_short(exc.message)}",
                                     "SIMLI_SESSION_ERROR")


def _bad_face(face_id: str) -> ProviderError:
    return ProviderError.bad_request(f"Simli does not know face id {face_id[:64]!r}", "INVALID_FACE_ID",
                                     field="avatar_id")


def _short(text: str) -> str:
    text = _redacted(text)
    return text if len(text) <= 200 else text[:197] + "..."


_QUERY = re.compile(r"\?[^\s'\"]*")


def _redacted(text: str) -> str:
    """Without URL query strings: Simli's WebSocket URL carries the session token in its query."""
    return _QUERY.sub("?...", text)


def mid_session_failure(stop_reason: str | None, error: SimliError | None) -> ProviderError:
    """The provider error for a Simli session that ended while the gateway session was running."""
    reason = (stop_reason or "").strip().upper()
    if reason == "IDLE":
        return ProviderError.idle_closed("Simli closed the session after its max_idle_time without audio")
    if reason == "MAX":
        return ProviderError.unavailable("Simli closed the session at its max_session_length",
                                         "PROVIDER_SESSION_CAP")
    if isinstance(error, SimliSessionError):
        return ProviderError.unavailable(f"Simli ended the session: {_short(error.message)}", "SIMLI_SESSION_ERROR")
    return ProviderError.unavailable("the connection to Simli was lost", "SIMLI_CONNECTION_LOST")
