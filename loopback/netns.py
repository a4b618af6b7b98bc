"""Knowing whether we run inside the private network namespace that ``scripts/netns-run`` creates.

libwebrtc and aioice ignore loopback interfaces when gathering ICE candidates, so WebRTC between two
processes (or two peers in one process) needs a real interface. ``scripts/netns-run CMD...`` runs CMD in a
fresh user+network namespace with ``lo`` up and a veth pair ``lkv0`` (10.77.0.1/24) / ``lkv1``
(10.77.0.2/24), IPv6 off; it exports ``LOOPBACK_NETNS=1`` and ``LOOPBACK_HOST=10.77.0.1``. Nothing leaves
that namespace and it disappears with the process.
"""

from __future__ import annotations

import os
import socket

DEFAULT_HOST = "10.77.0.1"
PEER_HOST = "10.77.0.2"


def loopback_host() -> str:
    """The address to bind the server to inside the namespace."""
    return os.environ.get("LOOPBACK_HOST", DEFAULT_HOST)


def _address_is_local(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


def not_in_namespace_reason() -> str | None:
    """None inside a usable namespace; otherwise why not (for pytest skip messages)."""
    if os.environ.get("LOOPBACK_NETNS") != "1":
        return (
            "needs the loopback network namespace (WebRTC ignores loopback interfaces): "
            "run under scripts/netns-run, e.g. `scripts/netns-run .venv/bin/python -m pytest tests/loopback`"
        )
    host = loopback_host()
    if not _address_is_local(host):
        return f"LOOPBACK_NETNS=1 but {host} is not an address of this network namespace"
    return None


def in_namespace() -> bool:
    """True inside the namespace made by ``scripts/netns-run`` (the veth address is bindable)."""
    return not_in_namespace_reason() is None
