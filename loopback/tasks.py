"""A small owner for background asyncio tasks, so that closing the server leaves nothing running."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger("loopback")

T = TypeVar("T")


class TaskSet:
    """Spawns named tasks, logs their failures and cancels whatever is still running on close."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"task set {self._name!r} is closed")
        task = asyncio.get_running_loop().create_task(coro, name=f"loopback:{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def names(self) -> list[str]:
        return sorted(t.get_name() for t in self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait for all of them to finish."""
        self._closed = True
        current = asyncio.current_task()
        while True:
            pending = [t for t in self._tasks if t is not current]
            if not pending:
                return
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
