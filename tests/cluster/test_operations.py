"""Operator commands on a real Redis Cluster (three masters), with real worker and gateway
processes: publish, a producer's XADD, dlq, replay and status."""

from __future__ import annotations

import json
import re

import pytest
import redis.asyncio as aioredis

from streamer.contract.keys import Keys
from tests.support.cluster import ClusterStack
from tests.support.events import payload
from tests.support.gateway import open_socket, receive
from tests.support.polling import eventually
from tests.support.processes import run_streamer

pytestmark = pytest.mark.timeout(90)


def streamer(env: dict[str, str], *args: str) -> str:
    """A one-shot `streamer` command that must succeed; its stdout."""
    result = run_streamer(list(args), env)
    assert result.returncode == 0, f"streamer {' '.join(args)}: {result.stderr}{result.stdout}"
    return result.stdout


async def log_numbers(redis: aioredis.Redis, keys: Keys, user: str) -> list[int]:
    entries = await redis.xrange(keys.user_log(user))
    return [json.loads(fields[b"content"])["n"] for _, fields in entries]


async def test_publish_and_a_producers_xadd_reach_the_socket(
    stack: ClusterStack, cluster_env: tuple[dict[str, str], Keys], client: aioredis.Redis
) -> None:
    """`streamer publish` and a producer's plain XADD to notify:events are both delivered
    to the user's socket."""
    env, keys = cluster_env
    stack.worker("w1")
    gateway = stack.gateway("g1")
    conn = await open_socket(gateway.port, "alice")
    try:
        await eventually(lambda: client.hget(keys.owners("alice"), "g1"), what="ownership")
        streamer(env, "publish", "--user", "alice", "--type", "t", "--data", '{"n": 0}')
        await client.xadd(keys.stream, {"payload": payload("alice", 1)})
        frames = await receive(conn, 2, within_s=20)
        assert [f["content"]["n"] for f in frames] == [0, 1]
    finally:
        await conn.close()
    assert not stack.crashes()


async def test_poison_is_dead_lettered_per_partition_and_requeued(
    stack: ClusterStack, cluster_env: tuple[dict[str, str], Keys], client: aioredis.Redis
) -> None:
    """Events over a strict worker's size limit land in their own partition's DLQ, on
    several masters; `streamer dlq list` shows them all and, once a worker without the limit
    runs, `streamer dlq requeue --all` gets each delivered once."""
    env, keys = cluster_env
    users = [f"user-{i}" for i in range(12)]
    strict = stack.worker("strict", MAX_PAYLOAD_BYTES="100")
    for user in users:
        big = payload(user, 0, data={"n": 0, "blob": "x" * 200})
        await client.xadd(keys.ingress(user), {"payload": big})
    dlqs = sorted({keys.of_user(u).dlq for u in users})
    assert len(dlqs) > 2

    async def all_dead() -> bool:
        return sum([await client.xlen(dlq) for dlq in dlqs]) == len(users)

    await eventually(all_dead, within_s=30, what="every event dead-lettered")
    listed = streamer(env, "dlq", "list")
    assert f"{len(users)} shown; {len(users)} dead letters in all" in listed
    totals = re.findall(r"^p\d+ +(\d+) in (\S+)$", listed, re.M)  # one line per DLQ
    assert sorted(dlq for _, dlq in totals) == dlqs
    assert sum(int(count) for count, _ in totals) == len(users)
    assert listed.count("too_large") == len(users)
    report = json.loads(streamer(env, "status", "--json"))
    assert report["dead_letter_reasons"] == [{"reason": "too_large", "count": len(users)}]
    assert stack.stop(strict) == 0
    stack.worker("relaxed")
    assert streamer(env, "dlq", "requeue", "--all").startswith(
        f"requeued {len(users)} dead letters"
    )

    async def all_delivered() -> bool:
        return all([await log_numbers(client, keys, u) == [0] for u in users])

    await eventually(all_delivered, within_s=30, what="every requeued event in its user's log")
    assert sum([await client.xlen(dlq) for dlq in dlqs]) == 0
    assert not stack.crashes()


async def test_status_and_replay_on_the_cluster(
    stack: ClusterStack, cluster_env: tuple[dict[str, str], Keys], client: aioredis.Redis
) -> None:
    """`streamer status` sees the live worker and gateway and nothing left behind;
    `streamer replay` of every ingress stream delivers the compatibility stream's events a
    second time, once each."""
    env, keys = cluster_env
    stack.worker("w1")
    stack.gateway("g1")
    for n in range(5):
        await client.xadd(keys.stream, {"payload": payload("bob", n)})
    await eventually(lambda: _equals(log_numbers(client, keys, "bob"), list(range(5))), within_s=20)

    def settled() -> dict[str, object] | None:
        report: dict[str, object] = json.loads(streamer(env, "status", "--json"))
        stream = report["stream"]
        assert isinstance(stream, dict)
        return report if stream["lag"] == 0 and stream["pending"] == 0 else None

    report = await eventually(settled, within_s=20, what="status: no lag, nothing pending")
    assert [w["id"] for w in report["workers"]] == ["w1"]  # type: ignore[index]
    assert [g["id"] for g in report["gateways"]] == ["g1"]  # type: ignore[index]
    assert report["healthy"] is True
    out = streamer(env, "replay", "--from", "-", "--to", "+")
    # The 5 entries of notify:events and their 5 routed copies in bob's partition: the copies
    # are skipped (their origin is routed again), so each event is delivered once more.
    assert out.startswith("replayed 5 of 10 entries scanned") and "from 17 streams" in out
    await eventually(
        lambda: _equals(log_numbers(client, keys, "bob"), [*range(5), *range(5)]), within_s=20
    )
    assert not stack.crashes()


async def _equals(numbers: object, expected: list[int]) -> bool:
    return await numbers == expected  # type: ignore[misc]
