"""A free port to give a benchmark's child process (`loopback.process.stop_process` stops one)."""

from __future__ import annotations

import socket


def free_port(host: str) -> int:
    """A port nothing listens on at `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
