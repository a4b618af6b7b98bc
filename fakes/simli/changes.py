"""Waiting for a condition on the fake's state without polling or sleeping.

Every change of a session or of the server calls :meth:`Changes.notify`; :meth:`Changes.wait_for` re-checks its
predicate after each one, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Changes"]


class Changes:
    """A broadcast "something changed" signal; ``notify`` is synchronous, so media and protocol code can call it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> None:
        """Return once ``predicate()`` is true; raise TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                event = self._event
                if predicate():
                    return
                await event.wait()
