"""One HTTP call to a vendor's API, its failures mapped to the gateway's provider faults.

The vendor's answer decides the fault: a refused key is AUTH (the agent's own call was fine), a refused request is
BAD_REQUEST, a full account is QUOTA (Tavus says so in a 400: "maximum concurrent conversations"), 402 is
PRECONDITION, 5xx and network trouble are UNAVAILABLE. What a vendor says is shortened and never carries the key.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from providers.base import ProviderError

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0  # per call, as the vendors' own plugins allow
_QUOTA_WORDS = ("concurrent", "quota", "limit reached", "too many")


@dataclass(frozen=True, slots=True)
class VendorCall:
    """One request: `path` is appended to the vendor's base URL."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    body: dict[str, Any] | None = field(default=None, repr=False)


class VendorHttp:
    """Calls one vendor. `secret` is scrubbed from anything a vendor says back."""

    def __init__(self, vendor: str, base_url: str, secret: str, timeout_s: float = TIMEOUT_S) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def call(self, call: VendorCall) -> dict[str, Any]:
        """The JSON object the vendor answered ({} for an empty body); ProviderError otherwise."""
        url = self.base_url + call.path
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as http, http.request(
                    call.method, url, headers=call.headers, json=call.body) as resp:
                text = await resp.text()
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError.unavailable(f"{self.vendor} did not answer ({type(exc).__name__})",
                                            "PROVIDER_UNREACHABLE") from None
        if status >= 300:
            raise self._failure(status, self._said(text), retry_after)
        if not text.strip():
            return {}
        try:
            answer = json.loads(text)
        except ValueError:
            raise ProviderError.unavailable(f"{self.vendor} answered something that is not JSON",
                                            "PROVIDER_BAD_ANSWER") from None
        if not isinstance(answer, dict):
            raise ProviderError.unavailable(f"{self.vendor} answered something that is not a JSON object",
                                            "PROVIDER_BAD_ANSWER")
        return answer

    def _said(self, text: str) -> str:
        """What the vendor said, short, without the key."""
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        if isinstance(parsed, dict):
            parsed = parsed.get("message") or parsed.get("error") or parsed.get("detail") or parsed
        said = str(parsed) if not isinstance(parsed, str) else parsed
        if self._secret:
            said = said.replace(self._secret, "***")
        return " ".join(said.split())[:200]

    def _failure(self, status: int, said: str, retry_after: str) -> ProviderError:
        vendor = self.vendor
        if status in (401, 403):
            log.warning("%s refused the gateway's credentials (HTTP %d)", vendor, status)
            return ProviderError.auth(f"{vendor} refused the gateway's credentials (HTTP {status})")
        if status == 429 or any(word in said.lower() for word in _QUOTA_WORDS):
            wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 5.0
            return ProviderError.quota(f"{vendor} is at its limit: {said}", "PROVIDER_QUOTA", retry_after_s=wait)
        if status == 402:
            return ProviderError.precondition(f"{vendor} cannot serve this account: {said}", "PROVIDER_BILLING")
        if 400 <= status < 500:
            return ProviderError.bad_request(f"{vendor} refused the request (HTTP {status}): {said}",
                                             "PROVIDER_REJECTED")
        return ProviderError.unavailable(f"{vendor} failed (HTTP {status})", "PROVIDER_UNAVAILABLE")
