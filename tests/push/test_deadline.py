"""The push watchdog: one timer cancels the watched tasks past their deadline, and only
those; a cancellation from elsewhere stays a cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from streamer.push.deadline import Watchdog

T = TypeVar("T")
TIMED_OUT = object()


async def watched(watchdog: Watchdog, awaitable: Awaitable[T]) -> T | object:
    """The pattern MarkedSender.send follows."""
    watch = watchdog.watch()
    try:
        return await awaitable
    except asyncio.CancelledError:
        if not watchdog.expired(watch):
            raise
        return TIMED_OUT
    finally:
        watchdog.forget(watch)


async def test_an_await_past_its_deadline_is_cancelled_and_reported() -> None:
    """A hung await ends near the deadline; what it awaited is cancelled."""
    watchdog = Watchdog(0.2, tick_s=0.02)
    hung: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    assert await watched(watchdog, hung) is TIMED_OUT
    assert 0.2 <= time.monotonic() - started < 1.0
    assert hung.cancelled()


async def test_others_finish_undisturbed_while_one_times_out() -> None:
    """Quick awaits return their value; only the hung one times out."""
    watchdog = Watchdog(0.2, tick_s=0.02)

    async def quick(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    tasks = [asyncio.ensure_future(watched(watchdog, quick(n))) for n in range(5)]
    tasks.append(asyncio.ensure_future(watched(watchdog, asyncio.Event().wait())))
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3, 4, TIMED_OUT]


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    """Shutdown cancelling the task propagates as CancelledError."""
    watchdog = Watchdog(10.0, tick_s=0.02)
    task = asyncio.ensure_future(watched(watchdog, asyncio.Event().wait()))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the cancellation was swallowed")
