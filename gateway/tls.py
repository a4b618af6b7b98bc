"""TLS on the gateway's port: a certificate and key from files, and optionally mutual TLS (callers must present a
certificate signed by the client CA). Plaintext is for loopback addresses: listening elsewhere without TLS, or
without API keys, is logged as a warning at startup."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the server's TLS material is. `client_ca` set: mutual TLS."""

    cert: str
    key: str
    client_ca: str = ""

    @classmethod
    def from_paths(cls, cert: str, key: str, client_ca: str) -> TlsFiles | None:
        """None for plaintext; ValueError for a combination that cannot serve."""
        if not cert and not key:
            if client_ca:
                raise ValueError("a client CA (mutual TLS) needs the server's own certificate and key too")
            return None
        if not cert or not key:
            raise ValueError("TLS needs both a certificate and its key")
        return cls(cert, key, client_ca)


async def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """The credentials to listen with; ValueError naming the file that cannot be read."""
    cert, key = await _read(files.cert, "certificate"), await _read(files.key, "key")
    if not files.client_ca:
        return grpc.ssl_server_credentials([(key, cert)])
    ca = await _read(files.client_ca, "client CA")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


async def _read(path: str, what: str) -> bytes:
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None


def is_loopback(listen: str) -> bool:
    """`listen` (host:port, or unix:...) is reachable from this machine only."""
    if listen.startswith("unix:"):
        return True
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or a wildcard such as 0.0.0.0 / [::]


def warn_if_exposed(listen: str, *, tls: bool, authenticated: bool) -> None:
    """Log what an address other machines can reach is missing."""
    if is_loopback(listen):
        return
    if not tls:
        log.warning("listening on %s without TLS: callers' API keys and speech cross the network in clear "
                    "(set AVATAR_GATEWAY_TLS_CERT and AVATAR_GATEWAY_TLS_KEY)", listen)
    if not authenticated:
        log.warning("listening on %s without API keys: anyone who reaches it can start sessions "
                    "(set AVATAR_GATEWAY_API_KEYS)", listen)
