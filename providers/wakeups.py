"""Shared wake-up slots: many paced loops, one event-loop timer per slot.

Every session's playout loop sleeps once per frame until its audio queue has drained to its lead. With hundreds of
sessions that is thousands of `call_later` timers a second, each a heap push, a heap pop and a cancel. Here waits
that end in the same `RESOLUTION_S` slot share one timer; a wait can still be ended early by resolving its future
(an interrupt does), and a future that is already done when its slot fires is skipped.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import ClassVar

RESOLUTION_S = 0.005  # a wait ends up to this much after the time it asked for


class Wakeups:
    """Resolves futures at their slot's time. One per event loop: use `for_loop`."""

    _per_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wakeups]] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution_s: float = RESOLUTION_S) -> None:
        self._loop = loop
        self._resolution = resolution_s
        self._slots: dict[int, list[asyncio.Future[None]]] = {}

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> Wakeups:
        """The running loop's instance."""
        wakeups = cls._per_loop.get(loop)
        if wakeups is None:
            wakeups = cls._per_loop[loop] = cls(loop)
        return wakeups

    def sleep(self, delay_s: float) -> asyncio.Future[None]:
        """A future resolved once `delay_s` has passed (rounded up to the slot); resolve it to end the wait early."""
        future: asyncio.Future[None] = self._loop.create_future()
        slot = math.ceil((self._loop.time() + delay_s) / self._resolution)
        waiters = self._slots.get(slot)
        if waiters is None:
            waiters = self._slots[slot] = []
            self._loop.call_at(slot * self._resolution, self._fire, slot)
        waiters.append(future)
        return future

    @property
    def pending_slots(self) -> int:
        """Slots with a timer still to fire."""
        return len(self._slots)

    def _fire(self, slot: int) -> None:
        for future in self._slots.pop(slot, ()):
            if not future.done():
                future.set_result(None)
