"""Delivery on a real Redis Cluster (three masters): real worker and gateway processes,
real sockets, every event counted (tests.support.load)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from streamer.infra.settings import Env, RedisSettings
from tests.support.cluster import ClusterStack, RedisClusterServers, migrate_slot, slot_owner
from tests.support.load import (
    PartitionSink,
    Plan,
    Produced,
    Receivers,
    Sink,
    StreamSink,
    produce,
)
from tests.support.metrics import isolated
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(90)


During = Callable[[Produced], Awaitable[None]]


async def deliver(
    stack: ClusterStack, plan: Plan, sink: Sink, during: During | None = None
) -> tuple[Receivers, Produced]:
    """Produce ``plan`` through ``sink`` to clients on one gateway; ``during`` (given what
    is produced so far) runs beside the producer. Returns the clients (stopped, audited)
    and what was produced."""
    gateway = stack.gateway("g1")
    receivers = Receivers(plan.user_ids, lambda: [gateway.port], within_s=80)
    produced = Produced()
    try:
        await receivers.connected()
        work = [produce(plan, sink, produced, within_s=30)]
        if during is not None:
            work.append(during(produced))
        await asyncio.gather(*work)
        complete = await receivers.complete(produced, within_s=40)
        assert complete, receivers.tally.figures(produced.per_user)
    finally:
        await receivers.stop()
        await sink.aclose()
    assert await receivers.audit([gateway.port]) == 0
    return receivers, produced


def assert_clean(stack: ClusterStack, receivers: Receivers, produced: Produced) -> None:
    figures = receivers.tally.figures(produced.per_user)
    assert figures.clean, figures
    assert not stack.crashes(), stack.crashes()


async def test_events_of_many_users_arrive_once_in_order_with_two_workers(
    stack: ClusterStack, cluster_env: tuple[dict[str, str], Keys]
) -> None:
    """Events of 40 users, written to their partitions, reach every socket exactly once and
    in order while two workers share the partitions."""
    env, keys = cluster_env
    stack.worker("w1")
    stack.worker("w2")
    plan = Plan(users=40, events_per_user=25, rate_per_s=1000)
    receivers, produced = await deliver(stack, plan, PartitionSink(env["REDIS_URL"], keys))
    assert_clean(stack, receivers, produced)


async def test_a_killed_workers_partitions_are_taken_over(
    stack: ClusterStack, cluster_env: tuple[dict[str, str], Keys]
) -> None:
    """A worker SIGKILLed mid-run: the survivor takes its partitions over (leases expire),
    and nothing is lost or doubled."""
    env, keys = cluster_env
    doomed = stack.worker("w1")
    stack.worker("w2")
    plan = Plan(users=30, events_per_user=40, rate_per_s=400)

    async def kill_midway(produced: Produced) -> None:
        redis = connect(env["REDIS_URL"], client_name="test")
        try:
            await eventually(lambda: _holds(redis, keys, "w1"), within_s=20, what="w1 owns")
            await eventually(lambda: produced.total >= plan.total // 3, within_s=20)
            stack.kill(doomed)
            assert produced.total < plan.total, "the kill came after the traffic"
        finally:
            await redis.aclose()

    sink = StreamSink(env["REDIS_URL"], keys)
    receivers, produced = await deliver(stack, plan, sink, kill_midway)
    assert_clean(stack, receivers, produced)


async def _holds(redis: object, keys: Keys, worker: str) -> bool:
    client = redis  # a cluster client: one GET per lease key, each in its partition's slot
    for part in keys.partitions:
        holder = await client.get(part.lease)  # type: ignore[attr-defined]
        if holder is not None and worker.encode() in holder:
            return True
    return False


async def test_a_busy_partitions_slot_migrates_during_traffic(
    stack: ClusterStack,
    cluster_env: tuple[dict[str, str], Keys],
    redis_cluster: RedisClusterServers,
) -> None:
    """The slot of a busy partition (its stream, user logs, owners, lease) moves to another
    master mid-traffic (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE): ASK and MOVED are
    followed, nothing is lost or doubled."""
    env, keys = cluster_env
    stack.worker("w1")
    stack.worker("w2")
    plan = Plan(users=30, events_per_user=40, rate_per_s=400)
    busy = keys.of_user(plan.user_ids[0])

    async def migrate_midway(produced: Produced) -> None:
        await eventually(lambda: produced.total >= plan.total // 3, within_s=20)
        source = slot_owner(redis_cluster, busy.stream)
        target = next(n for n in redis_cluster.nodes if n is not source)
        await asyncio.to_thread(migrate_slot, redis_cluster, busy.stream, target)
        assert slot_owner(redis_cluster, busy.stream) is target
        assert produced.total < plan.total, "the migration came after the traffic"

    sink = PartitionSink(env["REDIS_URL"], keys)
    receivers, produced = await deliver(stack, plan, sink, migrate_midway)
    assert_clean(stack, receivers, produced)


async def test_a_master_restarting_during_traffic_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    """A master (with AOF, no replica) goes down mid-traffic and comes back: the cluster
    answers CLUSTERDOWN and connections fail meanwhile; every process backs off and goes on,
    none exits, and every event arrives once, in order."""
    cluster = RedisClusterServers(tmp_path / "cluster", appendonly=True).start()
    stack = ClusterStack(cluster, isolated(cluster.url)[0], tmp_path)
    keys = Keys.from_settings(RedisSettings.from_env(Env(stack.env)))
    try:
        stack.worker("w1")
        stack.worker("w2")
        plan = Plan(users=30, events_per_user=40, rate_per_s=300)
        victim = cluster.nodes[1]

        async def restart_midway(produced: Produced) -> None:
            await eventually(lambda: produced.total >= plan.total // 4, within_s=20)
            await asyncio.to_thread(victim.stop)
            assert produced.total < plan.total, "the master stopped after the traffic"
            await eventually(lambda: _cluster_down(cluster), within_s=20, what="CLUSTERDOWN")
            await asyncio.to_thread(victim.start)
            await asyncio.to_thread(cluster.wait_ok)

        sink = PartitionSink(cluster.url, keys)
        receivers, produced = await deliver(stack, plan, sink, restart_midway)
        assert_clean(stack, receivers, produced)
    finally:
        stack.close()
        cluster.stop()


def _cluster_down(cluster: RedisClusterServers) -> bool:
    node = cluster.nodes[0]
    return b"cluster_state:fail" in cluster.command(node, "CLUSTER", "INFO")
