"""Run one load through a stack while a fault happens, and count what the clients saw.

The order of a run:
1. every user's client connects (before anything is produced, so it is owed everything);
2. *warm-up*: event 0 of every user, received by every client before any fault, so each
   client has an id to resume from (a client that has seen nothing cannot resume);
3. the rest of the events at the plan's rate, while the fault runs beside them (it may
   watch ``produced`` to strike at a point of the run);
4. wait until every client has every event, then until the stack has nothing left to do
   (no lag, nothing pending: ``streamer status``);
5. *audit*: every client resumes once more from its last id; anything replayed then is a
   late copy and is counted;
6. the figures go to ``stack.figures``, the close codes the clients saw to ``stack.notes``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from tests.chaos.stack import Stack
from tests.support.load import Figures, Plan, Ports, Produced, Receivers, Sink, produce
from tests.support.polling import eventually

Fault = Callable[[Produced], Coroutine[Any, Any, None]]

WARM_UP_S = 30.0


@dataclass(frozen=True, slots=True)
class Outcome:
    figures: Figures
    produced: Produced
    closes: collections.Counter[int]


async def drive(
    stack: Stack,
    plan: Plan,
    sink: Sink,
    ports: Ports,
    fault: Fault | None = None,
    *,
    produce_s: float = 60.0,
    deliver_s: float = 60.0,
) -> Outcome:
    """Produce ``plan`` into ``sink`` for clients on the gateways ``ports()`` names, with
    ``fault`` running beside the production; record and return the figures."""
    receivers = Receivers(plan.user_ids, ports, within_s=WARM_UP_S + produce_s + deliver_s)
    produced = Produced()
    try:
        await receivers.connected()
        await produce(plan, sink, produced, within_s=WARM_UP_S, stop_seq=1)
        if not await receivers.complete(produced, within_s=WARM_UP_S):
            raise AssertionError("warm-up: event 0 did not reach every client; stack broken?")
        fault_task = asyncio.create_task(fault(produced) if fault else asyncio.sleep(0))
        try:
            await produce(plan, sink, produced, within_s=produce_s, first_seq=1)
        finally:
            await fault_task
        delivered = await receivers.complete(produced, within_s=deliver_s)
        if not delivered:
            stack.problems.append(f"not every event arrived within {deliver_s:.0f} s")
        await _settle(stack)
    finally:
        await receivers.stop()
        await sink.aclose()
    unaudited = await receivers.audit(ports())
    if unaudited:
        stack.problems.append(f"{unaudited} clients could not resume after the run")
    figures = receivers.tally.figures(produced.per_user)
    closes = receivers.closes()
    stack.figures = figures
    stack.notes.append(_closes(closes))
    stack.notes.append(f"slowest delivery {figures.max_delay_s:.1f} s")
    return Outcome(figures, produced, closes)


async def reached(produced: Produced, count: int, within_s: float = 60.0) -> None:
    """Until the producer has had ``count`` events accepted: a point in the run to strike at."""
    await eventually(lambda: produced.total >= count, within_s=within_s, what=f"{count} produced")


async def _settle(stack: Stack) -> None:
    try:
        await asyncio.to_thread(stack.settled)
    except AssertionError as exc:
        stack.problems.append(f"never settled ({exc})")


def _closes(closes: collections.Counter[int]) -> str:
    codes = ", ".join(f"{code}x{n}" for code, n in sorted(closes.items()) if code != 1000)
    return f"closes {codes}" if codes else "no closes"


def expect_no_crash(stack: Stack) -> None:
    """No process crashed, and the run found nothing wrong beyond its figures."""
    crashes = stack.crashes()
    assert not crashes, f"{len(crashes)} processes crashed:\n" + "\n".join(crashes)
    assert not stack.problems, "; ".join(stack.problems)


def expect_clean(stack: Stack) -> None:
    """The scenario's verdict: nothing lost, doubled or reordered, no resync, no crash,
    and the run ended well (everything arrived in time, the stack settled)."""
    crashes = stack.crashes()
    figures = stack.figures
    assert figures is not None, "the scenario recorded no figures"
    counted = [
        f"{name} {value}"
        for name, value in (
            ("lost", figures.lost),
            ("duplicated", figures.duplicated),
            ("out of order", figures.out_of_order),
            ("resyncs (recovered: false)", figures.resyncs),
            ("crashes", len(crashes)),
        )
        if value
    ]
    wrong = ([f"{', '.join(counted)} of {figures.events} events"] if counted else []) + (
        stack.problems
    )
    assert not wrong, f"{'; '.join(wrong)} ({'; '.join(stack.notes)})\n" + "\n".join(crashes)
