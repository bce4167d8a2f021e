"""APNs delivery against the fake APNs (TLS, ALPN h2, real HTTP/2), end to end from XADD."""

from __future__ import annotations

import logging
import time

import pytest
import redis.asyncio as aioredis

from streamer.core.policy import Outcome
from streamer.push.base import PushRequest
from streamer.push.sender import HttpPushSender
from tests.fakes.apns import FakeApns
from tests.fakes.certs import PushCredentials
from tests.fakes.harness import (
    Fake,
    fates,
    metric,
    provider_sender,
    push_env,
    push_event,
    push_request,
    push_worker,
    token,
)
from tests.support.events import add_events, feedback, pending_count
from tests.support.servers import RedisServer

pytest_plugins = ["tests.fakes.plugin"]

RETRYING = {"CLAIM_IDLE_MS": "100", "RETRY_BASE_MS": "10", "MAX_DELIVERIES": "2"}


def apns_sender(env: dict[str, str], clock: float = 0.0) -> HttpPushSender:
    return provider_sender(env, "apns", lambda: time.time() + clock)


def ios_request(device_token: str, **data: object) -> PushRequest:
    return push_request("push_ios", device_token, title="Hi", **data)


async def test_each_apns_outcome_class_ends_in_the_right_state(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
) -> None:
    """Success, retry-then-success, dead tokens and persistent failures: acked, fed back, DLQ."""
    tokens = {p: token(p) for p in ("ok", "flaky", "bad", "gone", "busy", "err", "unavail")}
    await add_events(redis, [push_event(t, ["push_ios"], n) for n, t in enumerate(tokens.values())])
    env = push_env(redis_server.url, push_credentials, apns=fake_apns, **RETRYING)
    async with push_worker(redis, env) as worker:
        await worker.drain()
    seen = await fates(redis)
    assert seen == {
        tokens["bad"]: ("feedback", "apns:BadDeviceToken"),
        tokens["gone"]: ("feedback", "apns:Unregistered"),
        tokens["busy"]: ("dlq", "max_deliveries"),
        tokens["err"]: ("dlq", "max_deliveries"),
        tokens["unavail"]: ("dlq", "max_deliveries"),
    }
    app = fake_apns.app
    assert app.accepted[tokens["ok"]] == 1 and app.accepted[tokens["flaky"]] == 1
    assert app.attempts[tokens["flaky"]] == 2 and app.attempts[tokens["unavail"]] == 2
    assert await pending_count(redis) == 0
    records = {f[b"token"].decode(): f for f in await feedback(redis)}
    gone = records[tokens["gone"]]
    assert gone[b"user_id"] == b"u3" and gone[b"device_type"] == b"ios"
    assert b"unregistered at" in gone[b"detail"] and int(gone[b"time_ms"]) > 0


async def test_a_push_answered_by_goaway_every_time_is_retried_then_dead_lettered(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
) -> None:
    """GOAWAY before the stream was read: sent again on new connections, then a retry; after
    MAX_DELIVERIES the entry is dead-lettered."""
    device = token("goaway")
    await add_events(redis, [push_event(device, ["push_ios"])])
    connections = fake_apns.server.stats.connections
    env = push_env(redis_server.url, push_credentials, apns=fake_apns, **RETRYING)
    async with push_worker(redis, env) as worker:
        await worker.drain()
    assert await fates(redis) == {device: ("dlq", "max_deliveries")}
    # Two deliveries, three sends each (ATTEMPTS), each on a new connection.
    assert fake_apns.app.attempts[device] == 6
    assert fake_apns.server.stats.connections - connections == 6


async def test_expired_provider_token_is_replaced_and_the_push_retried(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
) -> None:
    """403 ExpiredProviderToken: a new JWT is minted, the push resent and acked."""
    expired = token("expired")
    await add_events(redis, [push_event(expired, ["push_ios"])])
    refreshes = metric("streamer_push_credential_refreshes_total", provider="apns")
    async with push_worker(redis, push_env(redis_server.url, push_credentials, fake_apns)) as w:
        await w.drain()
    jwts = fake_apns.app.jwts[expired]
    assert len(jwts) == 2 and jwts[0] != jwts[1]
    assert fake_apns.app.accepted[expired] == 1 and await pending_count(redis) == 0
    # The first mint of this sender, then the one forced by ExpiredProviderToken.
    assert metric("streamer_push_credential_refreshes_total", provider="apns") == refreshes + 2


async def test_a_too_old_provider_token_is_refreshed_once_not_in_a_loop(
    push_credentials: PushCredentials, fake_apns: Fake[FakeApns]
) -> None:
    """The fake checks the JWT's iat age; a sender whose clock is 2 h behind retries once."""
    env = push_env("redis://127.0.0.1:1/0", push_credentials, fake_apns)
    sender = apns_sender(env, clock=-7200)
    stale = token("ok")
    try:
        result = await sender.send(ios_request(stale))
    finally:
        await sender.close()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "apns:ExpiredProviderToken")
    assert fake_apns.app.attempts[stale] == 0  # refused before the device token is looked at


async def test_one_jwt_serves_many_pushes_across_reconnects(
    push_credentials: PushCredentials, fake_apns: Fake[FakeApns]
) -> None:
    """After a GOAWAY the push goes out on a new connection with the same provider JWT."""
    sender = apns_sender(push_env("redis://127.0.0.1:1/0", push_credentials, fake_apns))
    connections = fake_apns.server.stats.connections
    tokens = [token("goaway1"), *(token("ok") for _ in range(5))]
    try:
        results = [await sender.send(ios_request(t)) for t in tokens]
    finally:
        await sender.close()
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * len(tokens)
    assert fake_apns.server.stats.connections - connections == 2
    assert len({jwt for t in tokens for jwt in fake_apns.app.jwts[t]}) == 1


async def test_headers_and_payload_come_from_the_event(
    push_credentials: PushCredentials, fake_apns: Fake[FakeApns]
) -> None:
    """apns-push-type, -priority, -expiration, -collapse-id and -topic reach Apple as given."""
    sender = apns_sender(push_env("redis://127.0.0.1:1/0", push_credentials, fake_apns))
    device = token("ok")
    options = {"priority": "normal", "collapse_key": "job-7", "ttl_s": 600, "progress": 100}
    try:
        result = await sender.send(ios_request(device, **options))
    finally:
        await sender.close()
    assert result.outcome is Outcome.DELIVERED
    headers, payload = fake_apns.app.last[device]
    assert headers["apns-push-type"] == "alert" and headers["apns-priority"] == "5"
    assert headers["apns-collapse-id"] == "job-7" and headers["apns-topic"] == fake_apns.app.topic
    assert abs(int(headers["apns-expiration"]) - (time.time() + 600)) < 60
    assert payload == {"aps": {"alert": {"title": "Hi"}}, "progress": 100, "event_type": "done"}


async def test_payload_over_4_kb_is_dead_lettered_without_sending(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
) -> None:
    """An APNs payload over 4 KB is a permanent failure decided before any request."""
    big = token("ok")
    await add_events(redis, [push_event(big, ["push_ios"], blob="x" * 5000)])
    async with push_worker(redis, push_env(redis_server.url, push_credentials, fake_apns)) as w:
        await w.drain()
    assert await fates(redis) == {big: ("dlq", "apns:PayloadTooLarge")}
    assert fake_apns.app.attempts[big] == 0


async def test_configuration_error_is_dead_lettered_counted_and_logged_once(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_apns: Fake[FakeApns],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key id Apple does not know: InvalidProviderToken, DLQ each, metric each, one error log."""
    tokens = [token("ok") for _ in range(3)]
    await add_events(redis, [push_event(t, ["push_ios"], n) for n, t in enumerate(tokens)])
    env = push_env(redis_server.url, push_credentials, fake_apns, APNS_KEY_ID="WRONGKEY00")
    before = metric(
        "streamer_push_config_errors_total", provider="apns", reason="apns:InvalidProviderToken"
    )
    with caplog.at_level(logging.ERROR, logger="streamer.push"):
        async with push_worker(redis, env) as worker:
            await worker.drain()
    assert await fates(redis) == {t: ("dlq", "apns:InvalidProviderToken") for t in tokens}
    after = metric(
        "streamer_push_config_errors_total", provider="apns", reason="apns:InvalidProviderToken"
    )
    assert after - before == 3
    errors = [r for r in caplog.records if "InvalidProviderToken" in r.getMessage()]
    assert len(errors) == 1
    assert all(t not in r.getMessage() for r in caplog.records for t in tokens)
