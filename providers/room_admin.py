"""What a pipeline may ask of the LiveKit server beyond its own participant: a token for a vendor's worker, and
removing a participant from the room. The gateway implements it with its LiveKit credentials (which a pipeline
never sees); a headless gateway has none."""

from __future__ import annotations

from abc import ABC, abstractmethod


class RoomAdmin(ABC):
    """LiveKit server access for one session's room."""

    @abstractmethod
    def worker_token(self, identity: str, *, can_subscribe: bool) -> str:
        """A token for a vendor's worker to join the session's room as `identity`: agent kind, room-scoped,
        publishing camera, microphone and data on behalf of the session's agent, short-lived."""

    @abstractmethod
    async def remove_participant(self, identity: str) -> None:
        """Remove `identity` from the session's room; nothing happens if it is not there. Never raises."""
