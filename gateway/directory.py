"""Which gateway process owns a session id or a StartSession request id.

A gateway is one process (`SoloDirectory`: it owns everything, nothing to ask) or several worker processes sharing
one listen port (`gateway.cluster.ClusterDirectory`). Either way the session manager claims every session id and
request id it takes, releases them when it forgets them, and looks up the owner of a session it does not hold.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass


def session_key(session_id: str) -> str:
    """The directory key of a session id."""
    return "s:" + session_id


def request_key(request_id: str) -> str:
    """The directory key of a StartSession request id."""
    return "r:" + request_id


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: who owns the key, and whether this claim created the entry."""

    owner: int
    created: bool


class Elsewhere(Exception):
    """The session (or request) belongs to another worker process: forward the call there."""

    def __init__(self, owner: int) -> None:
        super().__init__(f"owned by worker {owner}")
        self.owner = owner


class Directory(ABC):
    """Ownership of session ids and request ids across the gateway's processes."""

    index: int = 0  # this process's worker index

    @abstractmethod
    async def claim(self, key: str) -> Claim:
        """Take `key` for this process, or learn who has it."""

    @abstractmethod
    def release(self, key: str) -> None:
        """Give up a key this process claimed (in the background if another process holds its entry)."""

    @abstractmethod
    async def lookup(self, key: str) -> int | None:
        """The worker that owns `key`, if any."""

    @abstractmethod
    def new_session_id(self) -> str:
        """A fresh session id whose directory entry lives in this process (claiming it needs no round trip)."""


class SoloDirectory(Directory):
    """One process owns every key; the session manager's own tables already make them unique."""

    async def claim(self, key: str) -> Claim:
        return Claim(self.index, created=False)

    def release(self, key: str) -> None:
        return None

    async def lookup(self, key: str) -> int | None:
        return None

    def new_session_id(self) -> str:
        return str(uuid.uuid4())
