"""The one poller of the suite: wait for a condition with a deadline, never a bare sleep.

``wait_for`` blocks (for threads and synchronous tests); ``eventually`` awaits and accepts a
plain or an async predicate. Both fail naming what was awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

INTERVAL_S = 0.02


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = INTERVAL_S,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def eventually(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    within_s: float = 10.0,
    what: str = "condition",
) -> Any:
    """Await until ``predicate`` (sync or async) returns something truthy, and return it."""
    deadline = time.monotonic() + within_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(INTERVAL_S)
