"""Fuzzed input from both sides: payloads XADDed to the stream, frames sent to the gateway."""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from streamer.infra.redis import connect_sync
from tests.chaos.drive import drive, expect_clean
from tests.chaos.fuzzing import (
    ANY,
    DELIVERED,
    MAX_PAYLOAD_BYTES,
    REASONS,
    REJECTED,
    Template,
    search,
    templates,
)
from tests.chaos.stack import Stack
from tests.support.gateway import open_socket
from tests.support.load import KEYS, Figures, Plan, Produced, Receivers, StreamSink
from tests.support.polling import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

PAYLOAD_EXAMPLES = 60  # each a batch of up to 25 entries
FRAME_EXAMPLES = 60


@dataclass(frozen=True, slots=True)
class Added:
    entry_id: str
    tag: int
    expect: str
    fields: dict[bytes, bytes]


async def test_fuzzed_payloads_are_delivered_or_dead_lettered(stack: Stack) -> None:
    """Hypothesis-made stream entries (valid events with unknown fields, broken ones, random
    JSON and bytes, invalid UTF-8 also in fields the schema ignores, oversized, without
    payload), for users whose ids a URL must escape: the worker never crashes, and every
    entry is either delivered to its user's socket once or dead-lettered with the reason
    the README gives."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1", MAX_PAYLOAD_BYTES=str(MAX_PAYLOAD_BYTES))
    # User ids the schema accepts, some of which a URL must escape (issue 12: one rule).
    users = ["fz-0", "team/fz-1", "fz%2F2", "ünï-fz-3", "fz-4-" + "x" * 250]
    receivers = Receivers(users, lambda: [gateway.port], within_s=240)
    await receivers.connected()
    added: list[Added] = []
    client = connect_sync(stack.redis.url, client_name="chaos-fuzz")

    def add(batch: list[Template]) -> None:
        pipe = client.pipeline(transaction=False)
        rendered: list[tuple[int, str, dict[bytes, bytes]]] = []
        for template in batch:
            tag = len(added) + len(rendered)
            fields, expect = template.render(tag)
            rendered.append((tag, expect, fields))
            pipe.xadd(KEYS.stream, fields)  # type: ignore[arg-type]
        for entry_id, (tag, expect, fields) in zip(pipe.execute(), rendered, strict=True):
            added.append(Added(entry_id.decode(), tag, expect, fields))

    try:
        strategy = st.lists(templates(users), min_size=1, max_size=25)
        await asyncio.to_thread(search, strategy, add, PAYLOAD_EXAMPLES)
        must_arrive = {a.tag for a in added if a.expect == DELIVERED}
        await eventually(
            lambda: must_arrive <= seen_tags(receivers, users), within_s=60, what="valid events"
        )
        await asyncio.to_thread(stack.settled)
    finally:
        client.close()
        await receivers.stop()
    dead = {d.source_id: d.reason for d in await asyncio.to_thread(stack.dead_letters)}
    copies = collections.Counter(t for u in users for t in receivers.tally.received(u))
    wrong = [verdict for a in added if (verdict := judge(a, dead, copies))]
    stack.figures = Figures(
        events=len(added),
        lost=sum("neither" in w for w in wrong),
        duplicated=sum(n - 1 for n in copies.values() if n > 1),
    )
    reasons = collections.Counter(dead.values())
    stack.notes.append(", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    kinds = collections.Counter(w.split(": ", 1)[0].split(" ", 1)[1] for w in wrong)
    summary = ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common())
    if wrong:
        stack.notes.append(f"wrong: {summary}")
    expect_clean(stack)
    assert not wrong, f"{len(wrong)} of {len(added)} entries handled wrongly ({summary}):\n" + (
        "\n".join(wrong[:10])
    )


def seen_tags(receivers: Receivers, users: list[str]) -> set[int]:
    return {tag for user in users for tag in receivers.tally.received(user)}


def judge(added: Added, dead: dict[str, str], copies: collections.Counter[int]) -> str | None:
    """What is wrong with how this entry was handled; None when it is right."""
    reason = dead.get(added.entry_id)
    delivered = copies[added.tag] > 0
    payload = added.fields.get(b"payload", b"")[:300]
    if delivered and reason is not None:
        problem = f"delivered and dead-lettered ({reason})"
    elif not delivered and reason is None:
        problem = "neither delivered nor dead-lettered"
    elif added.expect == DELIVERED and not delivered:
        problem = f"dead-lettered ({reason}) but valid"
    elif added.expect == REJECTED and delivered:
        problem = "delivered, expected to be dead-lettered"
    elif added.expect in REASONS and reason != added.expect:
        problem = f"{'delivered' if delivered else reason}, expected {added.expect}"
    elif added.expect in (ANY, REJECTED) and reason is not None and reason not in REASONS:
        problem = f"dead-lettered with an undocumented reason {reason!r}"
    else:
        return None
    return f"{added.entry_id} {problem}: {payload!r}"


# --- client frames ------------------------------------------------------------------------

MAX_CLIENT_FRAME = 4096

_client_json = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "resume", "pong", "subscribe", "", "PING"]) | st.integers()},
    optional={
        "last_event_id": st.text(max_size=30)
        | st.integers()
        | st.none()
        | st.sampled_from(["0-0", "1-1", "18446744073709551615-18446744073709551615", "-", "+"]),
        "data": st.text(max_size=50),
    },
).map(json.dumps)
frames = st.one_of(
    _client_json,
    st.text(max_size=300),
    st.binary(max_size=300),
    st.text(min_size=MAX_CLIENT_FRAME // 4, max_size=MAX_CLIENT_FRAME + 200),  # near the limit
)


def oversized(frame: str | bytes) -> bool:
    size = len(frame.encode()) if isinstance(frame, str) else len(frame)
    return size > MAX_CLIENT_FRAME


async def send_and_ping(port: int, user: str, batch: list[str | bytes]) -> None:
    """Send the frames, then a ping: the socket must still answer with a pong, unless a
    frame was over the limit, and then it must be closed with 1009."""
    conn = await open_socket(port, user)
    try:
        for frame in batch:
            await conn.send(frame)
        await conn.send('{"type":"ping"}')
        async with asyncio.timeout(10):
            while json.loads(await conn.recv()).get("type") != "pong":
                pass
        assert not any(oversized(f) for f in batch), "an oversized frame was accepted"
    except ConnectionClosed:
        assert any(oversized(f) for f in batch), f"closed with {conn.close_code} for {batch!r}"
        assert conn.close_code == 1009, f"closed with {conn.close_code}, expected 1009"
    finally:
        await conn.close()


async def test_fuzzed_client_frames_under_load(stack: Stack) -> None:
    """Hypothesis-made client frames (JSON of every shape, resume frames with junk ids,
    random text and bytes, frames around the size limit) on fresh sockets: each socket
    keeps answering pings unless a frame was too large (then 1009), the gateway stays up,
    and the clients of a concurrent load get every event once, in order."""
    gateway = await asyncio.to_thread(stack.gateway, "gw-1")
    stack.worker("w-1")
    loop = asyncio.get_running_loop()
    examples = collections.Counter[str]()

    def check(batch: list[str | bytes]) -> None:
        examples["run"] += 1
        user = f"fzc-{examples['run'] % 7}"
        future = asyncio.run_coroutine_threadsafe(send_and_ping(gateway.port, user, batch), loop)
        future.result(timeout=30)

    async def fault(_: Produced) -> None:
        strategy = st.lists(frames, min_size=1, max_size=6)
        await asyncio.to_thread(search, strategy, check, FRAME_EXAMPLES)

    plan = Plan(users=20, events_per_user=60, rate_per_s=200)
    await drive(stack, plan, StreamSink(stack.redis.url), lambda: [gateway.port], fault)
    stack.notes.append(f"{examples['run']} fuzzed sockets")
    expect_clean(stack)
    assert gateway.running()
