"""Integration tests: `streamer dlq` against a private Redis, with the real worker."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis

from streamer.core.policy import ChannelResult, Outcome
from streamer.ops.dlq import Terminal, dlq_command, register
from streamer.ops.replay import deadletters
from streamer.ops.replay.ids import require_id
from streamer.push.base import PushRequest
from streamer.worker.main import Worker
from tests.support.events import (
    KEYS,
    add_events,
    dlq_reasons,
    payload,
    user_log_numbers,
    worker_settings,
)
from tests.support.servers import RedisServer


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["dlq", *argv])


async def dlq(redis: aioredis.Redis, *argv: str, answer: bool = False) -> tuple[int, str, str]:
    term = Terminal(io.StringIO(), io.StringIO(), confirm=lambda _: answer)
    code = await dlq_command(redis, KEYS, parse(*argv), term)
    assert isinstance(term.out, io.StringIO) and isinstance(term.err, io.StringIO)
    return code, term.out.getvalue(), term.err.getvalue()


def big(n: int, user: str = "u1") -> bytes:
    """An event over MAX_PAYLOAD_BYTES=100: dead-lettered as too_large by a strict worker."""
    return payload(user, n, data={"n": n, "blob": "x" * 100})


class Provider:
    """A push provider that fails transiently while ``down``, then delivers."""

    channel = "push_ios"

    def __init__(self) -> None:
        self.down = True
        self.delivered: list[int] = []

    async def send(self, request: PushRequest) -> ChannelResult:
        if self.down:
            return ChannelResult("push_ios", Outcome.RETRY, "unavailable", "503")
        self.delivered.append(int(request.content.custom["n"]))
        return ChannelResult("push_ios", Outcome.DELIVERED)

    async def close(self) -> None:
        pass


async def test_requeue_all_of_fixed_entries_delivers_them_and_empties_the_dlq(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Dead letters requeued after the fix (a raised size limit) are delivered once each."""
    events = [big(n) if n % 2 else payload("u1", n, id=f"evt-{n}") for n in range(10)]
    ids = await add_events(redis, events)
    await Worker(redis, worker_settings(redis_server.url, MAX_PAYLOAD_BYTES="100")).drain()
    assert await redis.xlen(KEYS.dlq) == 5
    code, out, _ = await dlq(redis, "requeue", "--all")
    assert code == 0 and out.startswith("requeued 5 dead letters into notify:events")
    fixed = Worker(redis, worker_settings(redis_server.url))
    await fixed.drain()
    assert await user_log_numbers(redis, "u1") == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    assert await redis.xlen(KEYS.dlq) == 0
    requeued = [f for _, f in await redis.xrange(KEYS.stream) if b"requeued_from" in f]
    assert [f[b"replay_of"].decode() for f in requeued] == ids[1::2]


async def test_requeue_by_reason_after_a_provider_outage_leaves_other_reasons(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """--reason max_deliveries requeues the outage's pushes (delivered once); poison stays."""
    provider = Provider()
    pushes = [
        payload("u1", n, id=f"evt-{n}", target_channels=["push_ios"], device_token="t" * 64)
        for n in range(3)
    ]
    await add_events(redis, pushes)
    await redis.xadd(KEYS.stream, {"payload": b'{"event_type":"no user"}'})
    settings = worker_settings(
        redis_server.url, CLAIM_IDLE_MS="20", RETRY_BASE_MS="5", MAX_DELIVERIES="2"
    )
    worker = Worker(redis, settings, {"push_ios": provider})  # type: ignore[dict-item]
    await worker.drain()
    # The pushes die in their partition's DLQ, the undecodable entry in the compatibility
    # stream's: `streamer dlq` sees both.
    assert sorted(await dlq_reasons(redis)) == [
        "max_deliveries", "max_deliveries", "max_deliveries", "schema",
    ]  # fmt: skip
    provider.down = False
    code, out, _ = await dlq(redis, "requeue", "--reason", "max_deliveries")
    await worker.drain()
    assert code == 0 and out.startswith("requeued 3 dead letters")
    assert provider.delivered == [0, 1, 2]
    assert await dlq_reasons(redis) == ["schema"]


async def test_requeue_with_an_unknown_id_exits_2_and_writes_nothing(
    redis: aioredis.Redis,
) -> None:
    """One unknown id among known ones: exit 2 naming it; no entry moved."""
    known = await redis.xadd(KEYS.dlq, {"payload": payload("u1", 1), "reason": "schema"})
    before = (await redis.xrange(KEYS.dlq), await redis.exists(KEYS.stream))
    code, out, err = await dlq(redis, "requeue", known.decode(), "1-1")
    assert code == 2 and out == ""
    assert err == "streamer dlq: unknown dead-letter id(s) in notify:events:dlq: 1-1\n"
    assert (await redis.xrange(KEYS.dlq), await redis.exists(KEYS.stream)) == before


@pytest.mark.parametrize(
    "argv", [["requeue"], ["requeue", "--all", "--reason", "x"], ["requeue", "1-0", "--all"]]
)
async def test_requeue_needs_exactly_one_selection(redis: aioredis.Redis, argv: list[str]) -> None:
    """Ids, --reason and --all are alternatives; none or several is bad input."""
    await redis.xadd(KEYS.dlq, {"payload": payload("u1", 1), "reason": "schema"}, id="1-0")
    code, _, err = await dlq(redis, *argv)
    assert code == 2 and "exactly one of" in err
    assert await redis.xlen(KEYS.dlq) == 1 and not await redis.exists(KEYS.stream)


async def test_requeue_skips_dead_letters_removed_meanwhile(redis: aioredis.Redis) -> None:
    """A dead letter requeued or purged by someone else since it was read is not requeued."""
    first = await redis.xadd(KEYS.dlq, {"payload": payload("u1", 1), "source_id": "1-0"})
    second = await redis.xadd(KEYS.dlq, {"payload": payload("u1", 2), "source_id": "2-0"})
    entries = await deadletters.fetch(redis, KEYS.dlq, [require_id(first), require_id(second)])
    await redis.xdel(KEYS.dlq, first)
    where = deadletters.DeadLetters(KEYS.dlq, KEYS.stream)
    count = await deadletters.requeue(redis, where, [e for e in entries if e is not None])
    assert (count.requeued, count.gone) == (1, 1)
    assert [f[b"replay_of"] for _, f in await redis.xrange(KEYS.stream)] == [b"2-0"]
    assert await redis.xlen(KEYS.dlq) == 0


async def test_list_filters_by_reason_and_limit_and_show_prints_everything(
    redis: aioredis.Redis,
) -> None:
    """list shows one row per dead letter (reason filter, limit); show prints all fields."""
    for n, reason in enumerate(["schema", "too_large", "schema", "schema"]):
        fields = {"payload": payload(f"u{n}", n), "reason": reason, "error": f"err {n}",
                  "source_id": f"{n}-0", "deliveries": "1"}  # fmt: skip
        await redis.xadd(KEYS.dlq, fields, id=f"{100 + n}-0")  # type: ignore[arg-type]
    code, out, _ = await dlq(redis, "list", "--reason", "schema", "--limit", "2")
    rows = out.splitlines()
    assert code == 0 and [r.split()[:2] for r in rows[:2]] == [
        ["100-0", "schema"],
        ["102-0", "schema"],
    ]
    assert "user=u2 type=test" in rows[1] and "err 2" in rows[1]
    assert rows[2] == "2 shown with reason schema; 4 dead letters in notify:events:dlq"
    code, out, _ = await dlq(redis, "show", "101-0")
    assert code == 0
    assert "reason       too_large" in out and "source_id    1-0" in out
    assert json.loads(out[out.index("{") : out.rindex("}") + 1])["user_id"] == "u1"
    assert (await dlq(redis, "show", "999-0"))[:2] == (2, "")


async def test_missing_dlq_is_an_empty_dlq(redis: aioredis.Redis) -> None:
    """With no DLQ at all, list/requeue/purge report nothing to do and create no keys."""
    assert (await dlq(redis, "list"))[1] == "no dead letters (notify:events:dlq does not exist)\n"
    assert (await dlq(redis, "requeue", "--all"))[1].startswith("requeued 0 dead letters")
    assert (await dlq(redis, "purge", "--before", "+", "--yes"))[0] == 0
    assert await redis.dbsize() == 0


async def test_purge_deletes_only_older_entries_and_only_when_confirmed(
    redis: aioredis.Redis,
) -> None:
    """purge --before asks first; declined deletes nothing, confirmed deletes only older ones."""
    for ms in (1000, 2000, 2000, 3000, 4000):
        await redis.xadd(KEYS.dlq, {"payload": payload("u1", ms), "reason": "schema"}, id=f"{ms}-*")
    code, out, _ = await dlq(redis, "purge", "--before", "1970-01-01T00:00:03Z", answer=False)
    assert code == 1 and "nothing deleted" in out and await redis.xlen(KEYS.dlq) == 5
    code, out, _ = await dlq(redis, "purge", "--before", "3000", answer=True)
    assert code == 0 and out.startswith("purged 3 dead letters")
    assert [eid for eid, _ in await redis.xrange(KEYS.dlq)] == [b"3000-0", b"4000-0"]
    code, _, err = await dlq(redis, "purge", "--before", "yesterday", "--yes")
    assert code == 2 and "not a stream id or time" in err and await redis.xlen(KEYS.dlq) == 2


async def test_purge_deletes_only_what_was_counted_and_confirmed(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Dead letters that arrive while the prompt waits survive `purge --before +`: only the
    entries counted in the question are deleted."""
    for n in range(3):
        await redis.xadd(KEYS.dlq, {"payload": payload("u1", n), "reason": "schema"})
    late: list[bytes] = []

    def confirm_while_more_arrive(question: str) -> bool:
        assert question.startswith("delete 3 dead letters before ")
        with SyncRedis.from_url(redis_server.url) as other:
            late.extend(other.xadd(KEYS.dlq, {"payload": b"{}", "reason": "x"}) for _ in range(5))
        return True

    term = Terminal(io.StringIO(), io.StringIO(), confirm=confirm_while_more_arrive)
    code = await dlq_command(redis, KEYS, parse("purge", "--before", "+"), term)
    assert isinstance(term.out, io.StringIO)
    assert code == 0 and term.out.getvalue().startswith("purged 3 dead letters")
    assert [eid for eid, _ in await redis.xrange(KEYS.dlq)] == late
