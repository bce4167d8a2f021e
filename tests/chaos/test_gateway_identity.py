"""Two gateways started with the same GATEWAY_ID (a copy-pasted manifest, a pod rescheduled
while the old one still runs)."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.drive import drive, expect_clean, reached
from tests.chaos.stack import Stack
from tests.support.gateway import GatewayProcess
from tests.support.load import Plan, Produced, StreamSink
from tests.support.processes import http_get

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

GATEWAY_ID = "gw-twin"


def serving(gateway: GatewayProcess) -> bool:
    return gateway.running() and http_get(gateway.port, "/healthz", timeout=2)[0] == 200


async def test_duplicate_gateway_id_is_refused_or_taken_over_loudly(stack: Stack) -> None:
    """A second gateway starts with the id of a running one, under load. It must refuse to
    start (exit non-zero, naming the id) or take over, so that the first stops serving;
    never may both serve one id (they would trim each other's inbox and remove each
    other's ownership). Clients of either get every event once, in order."""
    first = await asyncio.to_thread(stack.gateway, GATEWAY_ID)
    second = stack.gateway(GATEWAY_ID, start=False)
    stack.worker("w-1")
    plan = Plan(users=30, events_per_user=60, rate_per_s=300)
    refused: list[str] = []

    def start_second() -> None:
        try:
            second.start()
        except AssertionError as exc:
            if "exited with" not in str(exc):
                raise  # neither healthy nor gone by itself: not an answer
            refused.append(str(exc))

    async def fault(produced: Produced) -> None:
        await reached(produced, plan.total // 4)
        await asyncio.to_thread(start_second)
        # Either outcome is the scenario's to judge, not a crash.
        stack.may_exit(first)
        stack.may_exit(second)

    def ports() -> list[int]:
        return [g.port for g in (first, second) if g.running()]

    await drive(stack, plan, StreamSink(stack.redis.url), ports, fault)
    both = await asyncio.to_thread(lambda: (serving(first), serving(second)))
    stack.notes.append(
        "second refused" if refused else f"first serving {both[0]}, second serving {both[1]}"
    )
    expect_clean(stack)
    if refused:
        assert second.process.returncode != 0, "the refusing gateway exited 0"
        assert GATEWAY_ID in second.output(), "the refusal does not name the id"
        assert both[0], "the first gateway stopped serving after refusing the second"
    else:
        assert both != (True, True), f"two gateways serve the id {GATEWAY_ID}"
        assert any(both), "no gateway serves any more"
