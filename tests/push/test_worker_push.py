"""The worker's push path with both fakes: no double pushes, no head-of-line blocking."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.fakes.apns import FakeApns
from tests.fakes.certs import PushCredentials
from tests.fakes.fcm import FakeFcm
from tests.fakes.harness import Fake, metric, push_env, push_event, push_worker, token
from tests.support.events import (
    KEYS,
    add_events,
    dead_letters,
    entries_read,
    payload,
    pending_count,
    user_log_numbers,
)
from tests.support.polling import eventually
from tests.support.servers import RedisServer

pytest_plugins = ["tests.fakes.plugin"]


async def test_push_accepted_once_is_not_resent_when_the_entry_is_retried(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
    fake_fcm: Fake[FakeFcm],
) -> None:
    """APNs accepts, FCM fails once: the redelivered entry pushes to FCM only, then is acked."""
    device = token("unsteady")
    await add_events(redis, [push_event(device, ["push_ios", "push_android"])])
    skipped = metric("streamer_push_sent_total", provider="apns", outcome="already_done")
    env = push_env(
        redis_server.url,
        push_credentials,
        fake_apns,
        fake_fcm,
        CLAIM_IDLE_MS="100",
        RETRY_BASE_MS="10",
    )
    async with push_worker(redis, env) as worker:
        await worker.drain()
    assert fake_apns.app.attempts[device] == 1 and fake_apns.app.accepted[device] == 1
    assert fake_fcm.app.attempts[device] == 2 and fake_fcm.app.accepted[device] == 1
    assert (
        metric("streamer_push_sent_total", provider="apns", outcome="already_done") == skipped + 1
    )
    assert await pending_count(redis) == 0 and await dead_letters(redis) == []


async def test_entry_redelivered_after_a_crash_is_not_pushed_again(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
    fake_fcm: Fake[FakeFcm],
) -> None:
    """Entries delivered again (as after a crash before XACK) find their markers and skip."""
    ios, android = token("ok"), token("ok")
    await add_events(
        redis,
        [push_event(ios, ["push_ios"], 1), push_event(android, ["push_android"], 2)],
        direct=True,
    )
    env = push_env(redis_server.url, push_credentials, fake_apns, fake_fcm)
    async with push_worker(redis, env) as worker:
        await worker.drain()
        for user in ("u1", "u2"):  # deliver everything again
            await redis.xgroup_setid(KEYS.ingress(user), KEYS.group, "0")
        await worker.drain()
    assert fake_apns.app.attempts[ios] == 1 and fake_fcm.app.attempts[android] == 1
    first = (await redis.xrange(KEYS.ingress("u1")))[0][0].decode()
    marker = KEYS.push_marker("u1", first, "push_ios")
    assert 0 < await redis.ttl(marker) <= 3600
    assert await pending_count(redis) == 0


async def test_other_channels_keep_flowing_while_one_provider_is_slow(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
    fake_fcm: Fake[FakeFcm],
) -> None:
    """While APNs holds a push, websocket and FCM deliveries are acked; stop drains the rest."""
    fake_apns.run("hold")
    slow = token("slow")
    fcm_tokens = [token("ok") for _ in range(20)]
    events = [push_event(slow, ["push_ios"], 0)]
    for n, device in enumerate(fcm_tokens, start=1):
        events += [payload("ws", n), push_event(device, ["push_android"], n)]
    await add_events(redis, events, direct=True)
    # The held push must not time out meanwhile: only detaching can let the others through.
    env = push_env(redis_server.url, push_credentials, fake_apns, fake_fcm, PUSH_TIMEOUT_S="60")

    async def only_the_slow_one_pending() -> bool:
        return await pending_count(redis) == 1 and await entries_read(redis) == len(events)

    async with push_worker(redis, env) as worker:
        await worker.manage()
        running = asyncio.create_task(worker.run())
        try:
            await eventually(
                only_the_slow_one_pending, what="everything but the held APNs push to be acked"
            )
            assert await user_log_numbers(redis, "ws") == list(range(1, 21))
            assert all(fake_fcm.app.accepted[t] == 1 for t in fcm_tokens)
            assert fake_apns.app.attempts[slow] == 1 and fake_apns.app.accepted[slow] == 0
            worker.stop()
        finally:
            fake_apns.run("release")
        await asyncio.wait_for(running, 10)
    assert fake_apns.app.accepted[slow] == 1
    assert await pending_count(redis) == 0
