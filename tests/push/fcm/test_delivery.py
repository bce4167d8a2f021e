"""FCM HTTP v1 delivery against the fake FCM and its OAuth endpoint, end to end from XADD."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from streamer.core.policy import Outcome
from streamer.push.base import PushRequest
from streamer.push.sender import HttpPushSender
from tests.fakes.certs import PushCredentials
from tests.fakes.fcm import FakeFcm
from tests.fakes.harness import (
    Fake,
    fates,
    provider_sender,
    push_env,
    push_event,
    push_request,
    push_worker,
    token,
)
from tests.support.events import KEYS, add_events, pending_count
from tests.support.polling import eventually
from tests.support.servers import RedisServer

pytest_plugins = ["tests.fakes.plugin"]

RETRYING = {"CLAIM_IDLE_MS": "100", "RETRY_BASE_MS": "10", "MAX_DELIVERIES": "2"}


def fcm_sender(env: dict[str, str]) -> HttpPushSender:
    return provider_sender(env, "fcm")


def android_request(device_token: str, **data: object) -> PushRequest:
    return push_request("push_android", device_token, **data)


async def test_each_fcm_outcome_class_ends_in_the_right_state(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_fcm: Fake[FakeFcm],
) -> None:
    """Success, retries, dead tokens, config errors and a refused access token, end to end."""
    prefixes = ("ok", "flaky", "revoke", "gone", "bad", "busy", "err", "unavail", "mismatch")
    tokens = {p: token(p) for p in (*prefixes, "thirdparty")}
    await add_events(
        redis, [push_event(t, ["push_android"], n) for n, t in enumerate(tokens.values())]
    )
    env = push_env(redis_server.url, push_credentials, fcm=fake_fcm, **RETRYING)
    async with push_worker(redis, env) as worker:
        await worker.drain()
    assert await fates(redis) == {
        tokens["gone"]: ("feedback", "fcm:UNREGISTERED"),
        tokens["bad"]: ("feedback", "fcm:INVALID_ARGUMENT"),
        tokens["busy"]: ("dlq", "max_deliveries"),
        tokens["err"]: ("dlq", "max_deliveries"),
        tokens["unavail"]: ("dlq", "max_deliveries"),
        tokens["mismatch"]: ("dlq", "fcm:SENDER_ID_MISMATCH"),
        tokens["thirdparty"]: ("dlq", "fcm:THIRD_PARTY_AUTH_ERROR"),
    }
    app = fake_fcm.app
    assert [app.accepted[tokens[p]] for p in ("ok", "flaky", "revoke")] == [1, 1, 1]
    assert app.attempts[tokens["flaky"]] == 2 and app.attempts[tokens["unavail"]] == 2
    assert app.attempts[tokens["mismatch"]] == 1
    assert await pending_count(redis) == 0


async def test_message_reaches_fcm_with_string_data_and_android_options(
    push_credentials: PushCredentials, fake_fcm: Fake[FakeFcm]
) -> None:
    """The fake (which refuses non-string data) receives notification, data and android options."""
    sender = fcm_sender(push_env("redis://127.0.0.1:1/0", push_credentials, fcm=fake_fcm))
    device = token("ok")
    data = {"title": "Done", "progress": 40, "meta": {"a": 1}, "priority": "high", "ttl_s": 90}
    try:
        result = await sender.send(android_request(device, **data))
    finally:
        await sender.close()
    assert result.outcome is Outcome.DELIVERED
    message = fake_fcm.app.last[device]
    assert message["notification"] == {"title": "Done"}
    assert message["data"] == {"progress": "40", "meta": '{"a":1}', "event_type": "done"}
    assert message["android"] == {"priority": "HIGH", "ttl": "90s"}


async def test_access_token_is_reused_and_replaced_when_refused(
    push_credentials: PushCredentials, fake_fcm: Fake[FakeFcm]
) -> None:
    """One OAuth token serves many pushes; a 401 gets a new token and the push goes through."""
    sender = fcm_sender(push_env("redis://127.0.0.1:1/0", push_credentials, fcm=fake_fcm))
    before = fake_fcm.app.token_requests
    try:
        results = [await sender.send(android_request(token("ok"))) for _ in range(5)]
        assert fake_fcm.app.token_requests - before == 1
        revoked = await sender.send(android_request(token("revoke")))
    finally:
        await sender.close()
    assert [r.outcome for r in [*results, revoked]] == [Outcome.DELIVERED] * 6
    assert fake_fcm.app.token_requests - before == 2


async def test_service_account_the_token_endpoint_refuses_is_a_config_error(
    push_credentials: PushCredentials, fake_fcm: Fake[FakeFcm], tmp_path: object
) -> None:
    """A key Google does not know: the token endpoint says invalid_grant, the push is DLQ'd."""
    assert fake_fcm.service_account is not None
    info = json.loads(fake_fcm.service_account.read_text())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = fake_fcm.service_account.with_name("wrong-key.json")
    account.write_text(json.dumps(info))
    env = push_env("redis://127.0.0.1:1/0", push_credentials, fcm=fake_fcm)
    sender = fcm_sender({**env, "FCM_SERVICE_ACCOUNT_FILE": str(account)})
    device = token("ok")
    try:
        result = await sender.send(android_request(device))
    finally:
        await sender.close()
    assert (result.outcome, result.reason) == (Outcome.PERMANENT, "fcm:oauth_rejected")
    assert fake_fcm.app.attempts[device] == 0


async def test_retry_after_delays_the_next_attempt(
    redis: aioredis.Redis,
    redis_server: RedisServer,
    push_credentials: PushCredentials,
    fake_fcm: Fake[FakeFcm],
) -> None:
    """QUOTA_EXCEEDED with Retry-After: 20 reschedules the entry no sooner than 20 s."""
    fake_fcm.app.retry_after = "20"
    await add_events(redis, [push_event(token("busy"), ["push_android"])], direct=True)
    env = push_env(redis_server.url, push_credentials, fcm=fake_fcm, CLAIM_IDLE_MS="60000")

    async def idle_ms() -> int:
        rows = await redis.xpending_range(KEYS.ingress("u0"), KEYS.group, "-", "+", 1)
        return int(rows[0]["time_since_delivered"]) if rows else 0

    async def rescheduled() -> bool:
        return await idle_ms() >= 30_000

    try:
        async with push_worker(redis, env) as worker:
            await worker.manage()
            assert await worker.step() == 1
            await eventually(rescheduled, what="the entry's idle time to be backdated")
            await worker.settled()
    finally:
        fake_fcm.app.retry_after = "1"
    # Reclaimed once idle reaches CLAIM_IDLE_MS (60 s): 20 s from now, not the ~1 s backoff.
    assert 40_000 <= await idle_ms() < 45_000
