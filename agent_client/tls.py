"""TLS to the gateway: the server checked against a CA (the system's roots by default), and optionally this
client's own certificate (mutual TLS)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

TLS_ENV = "AVATAR_GATEWAY_TLS"  # "1": TLS with the system's roots
CA_ENV = "AVATAR_GATEWAY_CA_FILE"
CERT_ENV = "AVATAR_GATEWAY_CLIENT_CERT"
KEY_ENV = "AVATAR_GATEWAY_CLIENT_KEY"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS material, already read (PEM bytes). `ca` None: the system's roots. `server_name`: the name to check the
    gateway's certificate against, if not the target's host."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    server_name: str = ""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    @classmethod
    async def load(cls, ca_file: str = "", cert_file: str = "", key_file: str = "", server_name: str = ""
                   ) -> ClientTls:
        """Read the files (off the event loop); ValueError naming one that cannot be read."""
        return cls(await _read(ca_file, "CA"), await _read(cert_file, "client certificate"),
                   await _read(key_file, "client key"), server_name)

    @classmethod
    async def from_env(cls, env: Mapping[str, str]) -> ClientTls | None:
        """AVATAR_GATEWAY_TLS=1 and/or AVATAR_GATEWAY_CA_FILE, AVATAR_GATEWAY_CLIENT_CERT, AVATAR_GATEWAY_CLIENT_KEY;
        None (plaintext) when none is set."""
        files = (env.get(CA_ENV, ""), env.get(CERT_ENV, ""), env.get(KEY_ENV, ""))
        if not any(files) and env.get(TLS_ENV, "").strip().lower() not in ("1", "true", "yes", "on"):
            return None
        return await cls.load(*files)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


async def _read(path: str, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None
