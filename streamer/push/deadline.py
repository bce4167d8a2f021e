"""Deadlines for pushes: one timer for all of them instead of one per push.

``asyncio.timeout`` arms and cancels a timer per push and adds a context manager per push;
every push has the same timeout, so deadlines fall due in the order they were set and one
periodic check, while pushes are in flight, finds those due at the front. The watched task
is cancelled at its deadline; it asks ``expired`` whether a CancelledError was ours.

    watch = watchdog.watch()
    try:
        ... await the push ...
    except asyncio.CancelledError:
        if not watchdog.expired(watch):
            raise  # cancelled by someone else (shutdown)
        ... the push timed out ...
    finally:
        watchdog.forget(watch)
"""

from __future__ import annotations

import asyncio
from typing import Any

Watch = tuple["asyncio.Task[Any]", int]  # the task, its cancellation count when watched


class Watchdog:
    """Cancels watched tasks ``timeout_s`` (give or take ``tick_s``) after ``watch``."""

    def __init__(self, timeout_s: float, tick_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self._tick_s = tick_s if tick_s is not None else max(0.01, min(0.25, timeout_s / 10))
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # in order of deadline
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> Watch:
        """Start the current task's clock (one watch per task at a time)."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = loop.call_later(self._tick_s, self._tick)
        return task, task.cancelling()

    def expired(self, watch: Watch) -> bool:
        """On CancelledError: whether it came from this watchdog alone (then it is undone,
        and the caller reports a timeout instead)."""
        task, cancelling = watch
        return task in self._expired and task.uncancel() <= cancelling

    def forget(self, watch: Watch) -> None:
        self._deadlines.pop(watch[0], None)
        self._expired.discard(watch[0])

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
