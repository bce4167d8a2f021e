"""Integration tests: the RabbitMQ bridge against the shared broker (unique queues per test)
and a private Redis. Nothing lost, nothing doubled, through crashes and outages."""

from __future__ import annotations

import json
import logging
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
import redis
from prometheus_client import REGISTRY

from bridges.core import plan_amqp
from bridges.idempotent import IdempotentWriter
from bridges.rabbitmq import RabbitBridge, dead_letter_queue, declare_queue, to_delivery
from bridges.settings import RabbitSettings
from streamer.infra.errors import ConfigError
from streamer.infra.redis import connect_sync
from streamer.infra.settings import Env
from tests.support.events import KEYS
from tests.support.polling import wait_for
from tests.support.processes import start_streamer
from tests.support.proxy import TcpProxy
from tests.support.rabbit import (
    InThread,
    all_numbers,
    channel,
    delete_queues,
    drain,
    event,
    ingress_length,
    proxied_url,
    publish_confirmed,
    ready_count,
    stream_numbers,
    unique_queue,
    wait_quiet,
)
from tests.support.servers import RedisServer, free_port, streamer_env

pytestmark = pytest.mark.slow

N = 10_000
U1 = KEYS.ingress("u1")  # the partition stream of user u1, whose events most tests send
FAST_BACKOFF = {"BRIDGE_BACKOFF_BASE_MS": "20", "BRIDGE_BACKOFF_MAX_MS": "300"}


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue name no one else uses; it and its dead-letter queue are deleted afterwards."""
    name = unique_queue()
    yield name
    delete_queues(name, dead_letter_queue(name))


def settings(redis_url: str, queue: str, **env: str) -> RabbitSettings:
    base = {"REDIS_URL": redis_url, "RABBITMQ_QUEUE_NAME_AI_UPDATES": queue, "METRICS_PORT": "0"}
    return RabbitSettings.from_env(Env({**base, **FAST_BACKOFF, **env}))


def start(redis_url: str, queue: str, **env: str) -> InThread:
    s = settings(redis_url, queue, **env)
    return InThread(
        RabbitBridge(s, connect_sync(redis_url, client_name="bridge"), "test-bridge")
    ).start()


def declare(queue: str) -> None:
    with channel() as ch:
        declare_queue(ch, queue)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def done(sync_redis: redis.Redis, queue: str, total: int) -> bool:
    written = ingress_length(sync_redis, KEYS) >= total
    return written and wait_quiet(lambda: ready_count(queue) == 0)


def test_ten_thousand_confirmed_messages_arrive_exactly_once_in_order(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str
) -> None:
    """10,000 persistent messages (half with a message id) reach the stream once each, in
    order, with their AMQP metadata, and none is left un-acked."""
    bridged_before = metric("streamer_bridge_messages_bridged_total", bridge="rabbitmq")
    bridge = start(redis_server.url, queue)
    wait_for(lambda: wait_quiet(lambda: ready_count(queue) == 0), what="queue declared")
    ids = [f"m-{n}" if n % 2 == 0 else None for n in range(N)]
    publish_confirmed(queue, [event(n) for n in range(N)], ids)
    wait_for(lambda: done(sync_redis, queue, N), timeout=60, what="all bridged")
    bridge.stop()
    assert stream_numbers(sync_redis, U1) == list(range(N))
    first, second = (f for _, f in sync_redis.xrange(U1, count=2))
    assert first[b"amqp_message_id"] == b"m-0" and b"amqp_message_id" not in second
    assert first[b"amqp_routing_key"] == queue.encode()
    assert first[b"amqp_redelivered"] == b"0"
    assert ready_count(queue) == 0  # nothing was left un-acked (it would be requeued)
    assert metric("streamer_bridge_messages_bridged_total", bridge="rabbitmq") - bridged_before == N


def user_numbers(client: redis.Redis, user: str) -> list[int]:
    """data.n of the user's entries in the user's partition stream, in stream order."""
    entries = client.xrange(KEYS.ingress(user))
    mine = [json.loads(f[b"payload"]) for _, f in entries]
    return [e["data"]["n"] for e in mine if e["user_id"] == user]


def test_each_message_lands_once_in_its_users_partition_stream(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str
) -> None:
    """3,000 messages for 300 users: each is written once, to its user's partition stream
    (Keys.ingress), in the user's order; the compatibility stream stays empty."""
    declare(queue)
    users = [f"user-{n % 300}" for n in range(3000)]
    publish_confirmed(queue, [event(n, u) for n, u in enumerate(users)])
    bridge = start(redis_server.url, queue)
    wait_for(lambda: done(sync_redis, queue, 3000), timeout=60, what="all bridged")
    bridge.stop()
    assert all_numbers(sync_redis, KEYS) == list(range(3000))
    assert sync_redis.xlen(KEYS.stream) == 0
    for user in set(users):
        assert user_numbers(sync_redis, user) == [n for n, u in enumerate(users) if u == user]
    written = sum(sync_redis.xlen(p.stream) > 0 for p in KEYS.partitions)
    assert written == KEYS.partition_count


def test_redis_frozen_past_the_reply_timeout_doubles_nothing(
    queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis frozen (SIGSTOP) while the bridge drains messages without message_id, until a
    write times out; thawed, it runs the timed-out write and the bridge's retry of it: every
    message is in the stream exactly once, in order."""
    caplog.set_level(logging.WARNING, logger="bridges.rabbitmq")
    server = RedisServer(tmp_path / "redis").start()
    assert server.process is not None
    client = connect_sync(server.url, client_name="test")
    declare(queue)
    publish_confirmed(queue, [event(n) for n in range(N)])
    bridge = start(server.url, queue, RABBITMQ_PREFETCH="500")
    try:
        wait_for(lambda: ingress_length(client, KEYS) >= 1000, timeout=30, interval=0.005)
        server.process.send_signal(signal.SIGSTOP)
        try:  # the reply timeout is 5 s: a write is taken but not answered in time
            wait_for(lambda: failures(caplog) >= 1, timeout=30, what="a timed-out write")
        finally:
            server.process.send_signal(signal.SIGCONT)
        wait_for(lambda: done(client, queue, N), timeout=60, what="all bridged")
        bridge.stop()
        assert all_numbers(client, KEYS) == list(range(N))
        assert stream_numbers(client, U1) == list(range(N))
    finally:
        client.close()
        server.stop()


def test_redis_at_maxmemory_mid_batch_doubles_and_loses_nothing(
    queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis with maxmemory and noeviction fills up while batches for many partitions are
    written (some calls of a batch taken, the rest refused); once there is room again the
    retries write the rest: every message once, each user's in order."""
    caplog.set_level(logging.WARNING, logger="bridges.rabbitmq")
    server = RedisServer(tmp_path / "redis").start()
    client = connect_sync(server.url, client_name="test")
    declare(queue)
    users = [f"user-{n % 64}" for n in range(600)]
    pad = "x" * 20_000  # 600 messages of ~20 KB: 12 MB, three times the room left
    publish_confirmed(queue, [event_padded(n, u, pad) for n, u in enumerate(users)])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 4_000_000)
    bridge = start(server.url, queue, RABBITMQ_PREFETCH="200")
    try:
        wait_for(lambda: failures(caplog) >= 3, timeout=30, what="writes refused")
        assert "maxmemory" in caplog.text
        assert 0 < ingress_length(client, KEYS) < 600
        client.config_set("maxmemory", 0)
        wait_for(lambda: done(client, queue, 600), timeout=60, what="all bridged")
        bridge.stop()
        assert all_numbers(client, KEYS) == list(range(600))
        for user in set(users):
            assert user_numbers(client, user) == [n for n, u in enumerate(users) if u == user]
    finally:
        client.close()
        server.stop()


def event_padded(n: int, user: str, pad: str) -> bytes:
    body = {"user_id": user, "event_type": "test", "data": {"n": n, "pad": pad}}
    return json.dumps(body).encode()


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read().decode()


def test_sigkill_mid_run_and_sigterm_lose_and_double_nothing(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str, tmp_path: Path
) -> None:
    """A bridge killed with SIGKILL mid-run, a successor stopped with SIGTERM mid-run (exit
    0, everything it wrote acked) and a third one: every message exactly once."""
    declare(queue)
    publish_confirmed(queue, [event(n) for n in range(N)])
    port = free_port()
    env = streamer_env(
        redis_server.url,
        RABBITMQ_QUEUE_NAME_AI_UPDATES=queue,
        RABBITMQ_QUEUES="",
        RABBITMQ_PREFETCH="20",  # small batches: the kill lands mid-run, likely mid-batch
        METRICS_PORT=str(port),
        METRICS_HOST="127.0.0.1",
        **FAST_BACKOFF,
    )
    args = ["bridge", "rabbitmq"]
    killed = start_streamer(args, env, tmp_path / "killed.log")
    wait_for(lambda: sync_redis.xlen(U1) >= 2000, timeout=30, interval=0.005)
    killed.signal(signal.SIGKILL)
    killed.wait(10)
    assert sync_redis.xlen(U1) < N
    stopped = start_streamer(args, env, tmp_path / "stopped.log")
    wait_for(lambda: sync_redis.xlen(U1) >= 5000, timeout=30, interval=0.005)
    assert stopped.stop() == 0
    written = sync_redis.xlen(U1)
    assert written < N
    assert ready_count(queue) == N - written  # all it wrote was acked, the rest requeued
    last = start_streamer(args, env, tmp_path / "last.log")
    wait_for(lambda: done(sync_redis, queue, N), timeout=60, what="all bridged")
    status, health = get(f"http://127.0.0.1:{port}/healthz")
    _, exposition = get(f"http://127.0.0.1:{port}/metrics")
    assert last.stop() == 0
    assert all_numbers(sync_redis, KEYS) == list(range(N))
    assert (status, health) == (200, "ok\n")
    assert 'streamer_bridge_messages_bridged_total{bridge="rabbitmq"}' in exposition


def test_redelivery_after_a_crash_between_xadd_and_ack_is_skipped(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str
) -> None:
    """Messages written by a bridge that died before acking are redelivered by RabbitMQ and
    skipped as duplicates, whether keyed by message id or by body digest."""
    declare(queue)
    publish_confirmed(
        queue, [event(n) for n in range(100)], [f"m-{n}" if n % 2 else None for n in range(100)]
    )
    with channel() as ch:  # the crashed bridge: same plan and writer, then no ack
        gets = [ch.basic_get(queue, auto_ack=False) for _ in range(60)]
        deliveries = [to_delivery(queue, *get) for get in gets]
        crashed = IdempotentWriter(sync_redis, KEYS, 600)
        crashed.write(crashed.batch(plan_amqp(deliveries, KEYS, 65536).writes))
    skipped = metric("streamer_bridge_duplicates_skipped_total", bridge="rabbitmq")
    bridge = start(redis_server.url, queue)
    wait_for(lambda: done(sync_redis, queue, 100), what="all bridged")
    bridge.stop()
    assert sorted(stream_numbers(sync_redis, U1)) == list(range(100))
    assert metric("streamer_bridge_duplicates_skipped_total", bridge="rabbitmq") - skipped == 60


def test_forced_connection_close_reconnects_without_loss_or_duplicates(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str
) -> None:
    """The broker connection cut mid-run: the bridge reconnects and every message still
    arrives exactly once (unacked ones are redelivered and deduplicated)."""
    declare(queue)
    publish_confirmed(queue, [event(n) for n in range(N)])
    reconnects = metric("streamer_bridge_reconnects_total", bridge="rabbitmq", peer="rabbitmq")
    proxy = TcpProxy("127.0.0.1", 5672)
    bridge = start(redis_server.url, queue, RABBITMQ_URL=proxied_url(proxy), RABBITMQ_PREFETCH="20")
    try:
        wait_for(lambda: sync_redis.xlen(U1) >= 2000, timeout=30, interval=0.005)
        assert proxy.cut() == 1
        assert sync_redis.xlen(U1) < N
        wait_for(lambda: done(sync_redis, queue, N), timeout=60, what="all bridged")
        bridge.stop()
    finally:
        proxy.close()
    assert all_numbers(sync_redis, KEYS) == list(range(N))
    assert proxy.accepted >= 2
    after = metric("streamer_bridge_reconnects_total", bridge="rabbitmq", peer="rabbitmq")
    assert after == reconnects + 1


def test_identical_bodies_and_a_message_id_reused_in_another_queue_are_all_bridged(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str
) -> None:
    """Two identical bodies without message id are two messages, and so is one message id
    used in two queues (markers are per queue); a producer's repeated id is still one."""
    other = unique_queue()
    try:
        declare(queue)
        declare(other)
        publish_confirmed(queue, [event(0), event(0), event(1), event(1)], [None, None, "x", "x"])
        publish_confirmed(other, [event(2)], ["x"])
        bridge = start(redis_server.url, queue, RABBITMQ_QUEUES=other)
        wait_for(lambda: done(sync_redis, queue, 4), what="all bridged")
        wait_for(lambda: wait_quiet(lambda: ready_count(other) == 0), what="other queue drained")
        bridge.stop()
    finally:
        delete_queues(other, dead_letter_queue(other))
    assert sorted(stream_numbers(sync_redis, U1)) == [0, 0, 1, 2]


def failures(caplog: pytest.LogCaptureFixture) -> int:
    return caplog.text.count("redis unavailable")


def test_redis_outage_holds_acks_and_loses_nothing(
    queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is down nothing is acked (the prefetch window stays full); after it
    returns every message arrives exactly once."""
    caplog.set_level(logging.WARNING, logger="bridges.rabbitmq")
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    client = connect_sync(server.url, client_name="test")
    declare(queue)
    bridge = start(server.url, queue, RABBITMQ_PREFETCH="100", HEALTH_THRESHOLD_S="0.05")
    try:
        publish_confirmed(queue, [event(n) for n in range(500)])
        wait_for(lambda: done(client, queue, 500), what="first half bridged")
        server.stop()
        publish_confirmed(queue, [event(n) for n in range(500, 1000)])
        wait_for(lambda: failures(caplog) >= 3, what="failed writes")
        wait_for(lambda: ready_count(queue) == 400, what="prefetch window full")
        seen = failures(caplog)
        wait_for(lambda: failures(caplog) >= seen + 2, what="more failed writes")
        assert ready_count(queue) == 400  # 100 still held un-acked; an ack would let more out
        assert not bridge.bridge.health()[0]
        server = RedisServer(tmp_path / "redis", port=server.port, appendonly=True).start()
        wait_for(lambda: done(client, queue, 1000), timeout=30, what="second half bridged")
        bridge.stop()
        assert stream_numbers(client, U1) == list(range(1000))
        assert bridge.bridge.health() == (True, "ok\n")
    finally:
        client.close()
        server.stop()


def test_heartbeats_keep_the_broker_connection_while_redis_is_down(
    queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a 1 s heartbeat, Redis down for several heartbeat timeouts while the bridge
    holds a batch: the broker connection survives (no reconnect), and everything arrives
    once Redis is back."""
    caplog.set_level(logging.WARNING, logger="bridges.rabbitmq")
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    client = connect_sync(server.url, client_name="test")
    declare(queue)
    publish_confirmed(queue, [event(n) for n in range(300)])
    server.stop()
    labels = {"bridge": "rabbitmq", "peer": "rabbitmq"}
    reconnects = metric("streamer_bridge_reconnects_total", **labels)
    url = "amqp://guest:guest@127.0.0.1:5672/?heartbeat=1"
    bridge = start(server.url, queue, RABBITMQ_URL=url, RABBITMQ_PREFETCH="100")
    try:
        down_since = time.monotonic()
        # RabbitMQ closes a connection that misses two heartbeats: 4 s is well past it.
        wait_for(
            lambda: failures(caplog) >= 3 and time.monotonic() - down_since > 4,
            timeout=30,
            what="Redis down for four heartbeat intervals",
        )
        assert "RabbitMQ connection lost" not in caplog.text
        server = RedisServer(tmp_path / "redis", port=server.port, appendonly=True).start()
        wait_for(lambda: done(client, queue, 300), timeout=30, what="all bridged")
        bridge.stop()
        assert all_numbers(client, KEYS) == list(range(300))
    finally:
        client.close()
        server.stop()
    assert metric("streamer_bridge_reconnects_total", **labels) == reconnects
    assert "RabbitMQ connection lost" not in caplog.text


def test_broker_lost_while_redis_is_down_the_held_batch_is_written_before_reconnecting(
    queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker connection dies while the bridge retries a batch Redis will not take: it
    keeps retrying that batch (same markers) until Redis is back, and only then reconnects;
    the redelivered copies of that batch are recognised and skipped."""
    caplog.set_level(logging.WARNING, logger="bridges.rabbitmq")
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    client = connect_sync(server.url, client_name="test")
    declare(queue)
    publish_confirmed(queue, [event(n) for n in range(300)])
    server.stop()
    skipped = metric("streamer_bridge_duplicates_skipped_total", bridge="rabbitmq")
    proxy = TcpProxy("127.0.0.1", 5672)
    bridge = start(server.url, queue, RABBITMQ_URL=proxied_url(proxy), RABBITMQ_PREFETCH="100")
    try:
        wait_for(lambda: failures(caplog) >= 2, what="failed writes")
        assert proxy.cut() == 1
        wait_for(lambda: "RabbitMQ connection lost" in caplog.text, what="broker loss noticed")
        server = RedisServer(tmp_path / "redis", port=server.port, appendonly=True).start()
        wait_for(lambda: done(client, queue, 300), timeout=30, what="all bridged")
        bridge.stop()
        assert all_numbers(client, KEYS) == list(range(300))
        assert stream_numbers(client, U1)[:5] == list(range(5))  # the held batch went first
    finally:
        proxy.close()
        client.close()
        server.stop()
    assert metric("streamer_bridge_duplicates_skipped_total", bridge="rabbitmq") > skipped


def test_malformed_messages_end_in_the_dead_queue_with_reason_logged(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Invalid messages are rejected into <queue>.dead, each logged with its reason; the
    valid ones around them are bridged."""
    caplog.set_level(logging.WARNING, logger="bridges.rabbitmq")
    declare(queue)
    bad = {"bad-json": b"{nope", "bad-schema": b'{"event_type":"x"}', "bad-utf8": b"\xff\xfe"}
    bodies = [event(0), *bad.values(), event(1)]
    publish_confirmed(queue, bodies, ["ok-0", *bad, "ok-1"])
    bridge = start(redis_server.url, queue)
    dead = dead_letter_queue(queue)
    wait_for(lambda: wait_quiet(lambda: ready_count(dead) == 3), what="dead-lettered")
    wait_for(lambda: done(sync_redis, queue, 2), what="valid bridged")
    bridge.stop()
    assert stream_numbers(sync_redis, U1) == [0, 1]
    dead_messages = drain(dead)
    assert sorted(body for body, _ in dead_messages) == sorted(bad.values())
    death = dead_messages[0][1].headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("rejected", queue)
    for message_id, reason in zip(bad, ("invalid_json", "schema", "invalid_utf8"), strict=True):
        assert any(message_id in m and reason in m for m in caplog.messages)


@pytest.fixture
def fanout(queue: str) -> Iterator[str]:
    """A fanout exchange bound to ``queue``, so a test can pick any routing key; deleted
    afterwards (before the queue fixture deletes the queue)."""
    name = f"{queue}_fanout"
    with channel() as ch:
        declare_queue(ch, queue)
        ch.exchange_declare(name, exchange_type="fanout", auto_delete=False)
        ch.queue_bind(queue, name)
    yield name
    with channel() as ch:
        ch.exchange_delete(name)


def test_non_utf8_routing_key_and_message_id_are_bridged_not_fatal(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str, fanout: str
) -> None:
    """A routing key or message id that is not UTF-8 (pika passes bytes) no longer crashes
    the bridge: the message is bridged with escaped metadata, and so are later ones."""
    with channel() as ch:
        ch.basic_publish(fanout, b"bad\xff\xferk", event(0))
        props = pika.BasicProperties(message_id=b"id\xff")  # type: ignore[arg-type]
        ch.basic_publish(fanout, "ok", event(1), props)
        ch.basic_publish(fanout, "ok", event(2))
    bridge = start(redis_server.url, queue)
    wait_for(lambda: done(sync_redis, queue, 3), what="all bridged")
    assert bridge.alive
    bridge.stop()
    assert stream_numbers(sync_redis, U1) == [0, 1, 2]
    first, second, _ = (f for _, f in sync_redis.xrange(U1))
    assert first[b"amqp_routing_key"] == b"bad\\xff\\xferk"
    assert second[b"amqp_message_id"] == b"id\\xff"


def test_missing_queue_managed_elsewhere_fails_clearly(
    sync_redis: redis.Redis, redis_server: RedisServer, queue: str
) -> None:
    """With RABBITMQ_DECLARE_QUEUES=false a missing queue stops the bridge with an error
    naming the queue and the setting."""
    bridge = start(redis_server.url, queue, RABBITMQ_DECLARE_QUEUES="false")
    wait_for(lambda: not bridge.alive, what="bridge gave up")
    with pytest.raises(ConfigError, match=f"RABBITMQ_DECLARE_QUEUES.*{queue}"):
        bridge.stop()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker), channel() as ch:
        ch.queue_declare(queue, passive=True)  # the bridge did not create it
