"""Deadlines for pushes: one timer for all of them instead of one per push.

``asyncio.timeout`` arms and cancels a timer per push (~5 % of the worker's CPU per push in
a profile); every push has the same timeout, so deadlines fall due in the order they were
set and one periodic check, while pushes are in flight, finds those due at the front.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class Watchdog:
    """Ends awaits that outlive ``timeout_s`` (give or take ``tick_s``) with TimeoutError."""

    def __init__(self, timeout_s: float, tick_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self._tick_s = tick_s if tick_s is not None else max(0.01, min(0.25, timeout_s / 10))
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # in order of deadline
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def bound(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable`` in the current task; TimeoutError once its time is up (the
        awaitable is cancelled, as by ``asyncio.timeout``)."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + self.timeout_s
        cancelling = task.cancelling()
        if self._timer is None:
            self._timer = loop.call_later(self._tick_s, self._tick)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task in self._expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._deadlines.pop(task, None)
            self._expired.discard(task)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = []
        for task, deadline in self._deadlines.items():
            if deadline > now:
                break
            due.append(task)
        for task in due:
            del self._deadlines[task]
            self._expired.add(task)
            task.cancel()
        self._timer = loop.call_later(self._tick_s, self._tick) if self._deadlines else None
