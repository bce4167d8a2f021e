"""Processes whose wall clocks disagree (libfaketime), as hosts' clocks do."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.chaos.drive import drive, expect_clean, expect_no_crash
from tests.chaos.stack import Stack
from tests.support.gateway import SECRET, ws_url
from tests.support.load import Plan, StreamSink

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

ISSUER_AHEAD_S = 3


def fresh_token(user: str, **claims: int) -> str:
    """A token as an issuer mints it: issued and valid from now (the issuer's clock)."""
    now = int(time.time())
    body = {"sub": user, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, SECRET, "HS256")


async def handshake_status(port: int, user: str, token: str) -> int:
    try:
        async with connect(ws_url(port, user, token=token), open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_gateway_behind_the_token_issuer_accepts_fresh_tokens(stack: Stack) -> None:
    """A gateway (and worker) whose clock is 3 s behind the token issuer's: tokens issued
    this second (iat, nbf = now) are accepted, and clients get every event once."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-behind", clock_offset_s=-ISSUER_AHEAD_S)
    stack.worker("w-behind", clock_offset_s=-ISSUER_AHEAD_S)
    statuses = {
        "iat=now": await handshake_status(gateway.port, "skew-1", fresh_token("skew-1")),
        "iat=nbf=now": await handshake_status(
            gateway.port, "skew-2", fresh_token("skew-2", nbf=int(time.time()))
        ),
    }
    stack.notes.append(", ".join(f"{claims}: {status}" for claims, status in statuses.items()))
    plan = Plan(users=20, events_per_user=30, rate_per_s=200)
    await drive(stack, plan, StreamSink(stack.redis.url), lambda: [gateway.port])
    expect_clean(stack)
    assert all(status == 101 for status in statuses.values()), (
        f"fresh tokens refused by a gateway {ISSUER_AHEAD_S} s behind: {statuses}"
    )


LIVE_MS = 15000  # streamer status's default --live-ms
SKEW_S = 20  # beyond it


async def test_status_sees_live_processes_whatever_their_clocks(stack: Stack) -> None:
    """A worker and a gateway whose clocks are 20 s behind, and `streamer status` run with
    a clock 20 s ahead: liveness is judged on Redis's clock, so status sees both as live
    (and healthy) either way."""
    stack.worker("w-behind", clock_offset_s=-SKEW_S)
    await asyncio.to_thread(stack.gateway, "gw-behind", clock_offset_s=-SKEW_S)
    await asyncio.to_thread(stack.settled)  # the group exists: the worker is up and beating
    seen = {}
    for who, offset_s in (("status on the host's clock", 0), (f"status {SKEW_S} s ahead", SKEW_S)):
        report = await asyncio.to_thread(stack.status, clock_offset_s=offset_s)
        workers = [w["id"] for w in report["workers"]]
        gateways = [g["id"] for g in report["gateways"]]
        seen[who] = (workers, gateways, report["healthy"], report["problems"])
    stack.notes.extend(f"{who}: workers {w}, gateways {g}" for who, (w, g, _, _) in seen.items())
    expect_no_crash(stack)
    for who, (workers, gateways, healthy, problems) in seen.items():
        assert workers == ["w-behind"], f"{who}: live workers {workers} ({problems})"
        assert gateways == ["gw-behind"], f"{who}: live gateways {gateways}"
        assert healthy, f"{who}: {problems}"
