"""Markers and the bound on every push: checks and writes batched per partition, and a hung
provider or a frozen marker Redis ends pushes as retries within PUSH_TIMEOUT_S while the
worker goes on with everything else."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from streamer.push.marker import PushMarkers
from tests.fakes.apns import FakeApns
from tests.fakes.certs import PushCredentials
from tests.fakes.harness import (
    Fake,
    metric,
    push_env,
    push_event,
    push_request,
    push_worker,
    token,
)
from tests.support.events import add_events, dead_letters, payload, pending_count, user_log_numbers
from tests.support.polling import eventually
from tests.support.servers import RedisServer

pytest_plugins = ["tests.fakes.plugin"]


@pytest.fixture
def marker_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for the markers alone, so it can be frozen (SIGSTOP)."""
    server = RedisServer(tmp_path / "markers").start()
    yield server
    assert server.process is not None
    server.process.send_signal(signal.SIGCONT)
    server.stop()


async def evalsha_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_checks_and_writes_share_one_call_per_partition(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Forty pushes of four users checked at once: one script call per partition involved;
    a check sees the writes made before it, and markers expire."""
    keys = Keys("notify:", "notify:events", "notify-workers")
    markers = PushMarkers(connect(redis_server.url, client_name="t-markers"), keys, 60)
    requests = [push_request("push_ios", token("ok"), n=n) for n in range(40)]
    requests = [
        type(r)(
            r.channel, f"user{n % 4}", f"evt-{n}", r.event_type, r.device_token, r.content, r.data
        )
        for n, r in enumerate(requests)
    ]
    try:
        await markers.accepted(markers.marker(requests[0]))  # loads the script
        before = await evalsha_calls(redis)
        for request in requests[:10]:
            markers.mark(markers.marker(request))
        found = await asyncio.gather(*(markers.accepted(markers.marker(r)) for r in requests))
        calls = await evalsha_calls(redis) - before
    finally:
        await markers.close()
    partitions = {keys.of_user(r.user_id).index for r in requests}
    assert found == [True] * 10 + [False] * 30
    assert calls <= 2 * len(partitions)  # the writes' flush, then the checks' flush
    assert 0 < await redis.ttl(markers.marker(requests[0]).key) <= 60


async def test_a_hung_provider_ends_pushes_as_retries_and_frees_the_capacity(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
) -> None:
    """Two pushes APNs never answers take both PUSH_CONCURRENCY slots: websocket deliveries
    go on meanwhile, each push ends as a retry after PUSH_TIMEOUT_S with its stream reset and
    its entry kept pending, and the slots serve new pushes again (they used to stay taken
    for as long as the provider did not answer)."""
    fake_apns.run("hold")
    hung = [token("slow") for _ in range(2)]
    await add_events(redis, [push_event(t, ["push_ios"], n) for n, t in enumerate(hung)])
    env = push_env(
        redis_server.url,
        push_credentials,
        fake_apns,
        PUSH_TIMEOUT_S="1",
        PUSH_CONCURRENCY="2",
        CLAIM_IDLE_MS="60000",
    )
    timeouts = metric("streamer_push_sent_total", provider="apns", outcome="retry")
    resets = fake_apns.server.stats.resets
    others = [token("ok") for _ in range(10)]
    try:
        async with push_worker(redis, env) as worker:
            await worker.manage()
            running = asyncio.create_task(worker.run())
            await eventually(
                lambda: all(fake_apns.app.attempts[t] == 1 for t in hung),
                what="both hung pushes at the provider",
            )
            sent = time.monotonic()
            await add_events(redis, [payload("ws", n) for n in range(1, 6)])
            await eventually(
                lambda: _numbers_are(redis, "ws", [1, 2, 3, 4, 5]), what="websocket deliveries"
            )

            def timed_out() -> bool:
                now = metric("streamer_push_sent_total", provider="apns", outcome="retry")
                return now - timeouts == 2

            await eventually(timed_out, within_s=5, what="both hung pushes to time out")
            # The 1 s bound and a 0.1 s tick, counted from the push's start (before the send),
            # with room for a loaded machine; without the bound they never end.
            assert time.monotonic() - sent < 2.5
            await eventually(
                lambda: fake_apns.server.stats.resets - resets == 2, what="their streams reset"
            )
            await add_events(redis, [push_event(t, ["push_ios"], 9) for t in others])
            await eventually(
                lambda: all(fake_apns.app.accepted[t] == 1 for t in others),
                within_s=5,
                what="new pushes to go out on the freed slots",
            )

            async def only_the_hung_pending() -> bool:  # kept for a retry: not acked, not lost
                return await pending_count(redis) == 2

            await eventually(only_the_hung_pending, what="the others acked, the hung kept")
            worker.stop()
            await asyncio.wait_for(running, 10)
    finally:
        fake_apns.run("release")


async def _numbers_are(redis: aioredis.Redis, user: str, numbers: list[int]) -> bool:
    return await user_log_numbers(redis, user) == numbers


async def test_a_frozen_marker_redis_ends_pushes_as_retries_and_the_worker_goes_on(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    marker_redis: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
) -> None:
    """The markers' Redis stops answering (SIGSTOP): the push ends as a retry within the
    bound instead of waiting on it, websocket deliveries carry on, and once Redis is back
    the push is delivered and everything is acked."""
    device = token("ok")
    await add_events(redis, [push_event(device, ["push_ios"], 0), payload("ws", 1)])
    env = push_env(marker_redis.url, push_credentials, fake_apns, PUSH_TIMEOUT_S="1")
    env.update(CLAIM_IDLE_MS="300", RETRY_BASE_MS="10")
    assert marker_redis.process is not None
    timeouts = metric("streamer_push_sent_total", provider="apns", outcome="retry")
    async with push_worker(redis, env) as worker:
        await worker.manage()
        marker_redis.process.send_signal(signal.SIGSTOP)
        running = asyncio.create_task(worker.run())
        try:
            await eventually(lambda: user_log_numbers(redis, "ws"), what="the websocket delivery")

            def timed_out() -> bool:
                now = metric("streamer_push_sent_total", provider="apns", outcome="retry")
                return now > timeouts

            await eventually(timed_out, within_s=6, what="the push to end as a retry")
            assert fake_apns.app.attempts[device] == 0  # no marker answer, no send
        finally:
            marker_redis.process.send_signal(signal.SIGCONT)
        await eventually(
            lambda: fake_apns.app.accepted[device] == 1, within_s=15, what="the push, later"
        )
        await eventually(lambda: _all_acked(redis), what="every entry to be acked")
        worker.stop()
        await asyncio.wait_for(running, 10)
    assert fake_apns.app.accepted[device] == 1


async def _all_acked(redis: aioredis.Redis) -> bool:
    return await pending_count(redis) == 0 and await dead_letters(redis) == []
