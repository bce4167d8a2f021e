"""The push watchdog: one timer ends the awaits past their deadline, and only those."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamer.push.deadline import Watchdog


async def test_an_await_past_its_deadline_raises_timeout_and_is_cancelled() -> None:
    """A hung await ends with TimeoutError near the deadline; what it awaited is cancelled."""
    watchdog = Watchdog(0.2, tick_s=0.02)
    hung: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await watchdog.bound(hung)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert hung.cancelled()


async def test_others_finish_undisturbed_while_one_times_out() -> None:
    """Quick awaits return their value; only the hung one times out."""
    watchdog = Watchdog(0.2, tick_s=0.02)

    async def quick(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    async def hung() -> int:
        await asyncio.Event().wait()
        return -1

    results = await asyncio.gather(
        *(watchdog.bound(quick(n)) for n in range(5)),
        watchdog.bound(hung()),
        return_exceptions=True,
    )
    assert results[:5] == [0, 1, 2, 3, 4] and isinstance(results[5], TimeoutError)


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    """Shutdown cancelling the task propagates as CancelledError, not TimeoutError."""
    watchdog = Watchdog(10.0, tick_s=0.02)
    task = asyncio.ensure_future(watchdog.bound(asyncio.Event().wait()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
