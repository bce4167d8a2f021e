"""Integration tests: the Redis Pub/Sub bridge against private redis-servers."""

from __future__ import annotations

import json
from pathlib import Path

import redis
from prometheus_client import REGISTRY

from bridges.core import dead_letter_stream, redis_glob
from bridges.pubsub import PubSubBridge
from bridges.settings import PubSubSettings
from streamer.infra.redis import connect_sync
from streamer.infra.settings import Env
from tests.support.events import KEYS
from tests.support.polling import wait_for
from tests.support.proxy import TcpProxy
from tests.support.rabbit import InThread, event, stream_numbers
from tests.support.servers import RedisServer

CHANNEL = "general_notifications"
U1 = KEYS.ingress("u1")  # the partition stream of user u1, whose events the tests send
DLQ = dead_letter_stream(KEYS)


def start(url: str, **env: str) -> InThread:
    base = {
        "REDIS_URL": url,
        "METRICS_PORT": "0",
        "BRIDGE_BACKOFF_BASE_MS": "20",
        "BRIDGE_BACKOFF_MAX_MS": "200",
    }
    settings = PubSubSettings.from_env(Env({**base, **env}))
    bridge = PubSubBridge(
        settings,
        connect_sync(settings.source_url, client_name="source"),
        connect_sync(url, client_name="sink"),
    )
    return InThread(bridge).start()


def subscribed(sync_redis: redis.Redis, channel: str = CHANNEL, patterns: int = 0) -> bool:
    counts = dict(sync_redis.pubsub_numsub(channel))
    return counts.get(channel.encode(), 0) >= 1 and sync_redis.pubsub_numpat() >= patterns


def shard_subscribed(sync_redis: redis.Redis, channel: str) -> bool:
    counts = dict(sync_redis.pubsub_shardnumsub(channel))  # type: ignore[no-untyped-call]
    return bool(counts.get(channel.encode(), 0) >= 1)


def test_messages_reach_the_stream_and_invalid_ones_the_dlq(
    sync_redis: redis.Redis, redis_server: RedisServer
) -> None:
    """Valid messages on the channel and on a pattern reach the stream with their channel;
    an invalid one lands in the DLQ with reason bridge_invalid and source pubsub:<channel>."""
    bridge = start(redis_server.url, REDIS_PUBSUB_PATTERNS="ai.*")
    wait_for(lambda: subscribed(sync_redis, patterns=1), what="subscribed")
    for n in range(300):
        sync_redis.publish(CHANNEL if n % 3 else "ai.progress", event(n))
    sync_redis.publish(CHANNEL, b'{"user_id": "u1"')
    wait_for(lambda: sync_redis.xlen(U1) >= 300 and sync_redis.xlen(DLQ) >= 1)
    bridge.stop()
    assert stream_numbers(sync_redis, U1) == list(range(300))
    channels = [f[b"pubsub_channel"] for _, f in sync_redis.xrange(U1, count=2)]
    assert channels == [b"ai.progress", CHANNEL.encode()]
    [(_, dead)] = sync_redis.xrange(DLQ)
    assert dead[b"reason"] == b"bridge_invalid"
    assert dead[b"source_id"] == f"pubsub:{CHANNEL}".encode()
    assert dead[b"error"].startswith(b"invalid_json:")
    assert (dead[b"payload"], dead[b"deliveries"]) == (b'{"user_id": "u1"', b"1")
    # Progress records only cover this process's own retries: one per stream written to
    # (here u1's partition and the DLQ), short-lived, and no digests (nothing redelivers).
    records = [k.decode() for k in sync_redis.scan_iter(match="*bridged*", count=1000)]
    assert len(records) == 2 and all(":p:" in r for r in records)
    assert all(0 < sync_redis.ttl(key) <= 3600 for key in records)


def test_resubscribes_after_a_redis_outage(tmp_path: Path) -> None:
    """After Redis restarts the bridge subscribes again and bridges new messages."""
    server = RedisServer(tmp_path / "redis").start()
    client = connect_sync(server.url, client_name="test")
    labels = {"bridge": "pubsub", "peer": "redis"}
    before = REGISTRY.get_sample_value("streamer_bridge_reconnects_total", labels) or 0.0
    bridge = start(server.url)
    try:
        wait_for(lambda: subscribed(client), what="subscribed")
        server.stop()
        server = RedisServer(tmp_path / "redis", port=server.port).start()
        wait_for(lambda: subscribed(client), what="subscribed again")
        client.publish(CHANNEL, json.dumps({"user_id": "u1", "event_type": "t"}))
        wait_for(lambda: client.xlen(U1) == 1, what="bridged after the outage")
        bridge.stop()
    finally:
        client.close()
        server.stop()
    after = REGISTRY.get_sample_value("streamer_bridge_reconnects_total", labels) or 0.0
    assert after == before + 1


def test_one_publish_is_bridged_once_whatever_subscriptions_match_it(
    sync_redis: redis.Redis, redis_server: RedisServer
) -> None:
    """A PUBLISH matching the subscribed channel and two patterns, or two patterns, or one,
    is written once; it is attributed to the channel, else to the first pattern."""
    patterns = "general_*,*_notifications"
    bridge = start(redis_server.url, REDIS_PUBSUB_PATTERNS=patterns)
    wait_for(lambda: subscribed(sync_redis, patterns=2), what="subscribed")
    published = {CHANNEL: 3, "general_x_notifications": 2, "ai_notifications": 1, "x": 0}
    for n, (channel, receivers) in enumerate(published.items()):
        assert sync_redis.publish(channel, event(n)) == receivers
    wait_for(lambda: sync_redis.xlen(U1) >= 3, what="bridged")
    bridge.stop()  # drains: any extra copy already sent would be written by now
    channels = [f[b"pubsub_channel"].decode() for _, f in sync_redis.xrange(U1)]
    assert channels == [CHANNEL, "general_x_notifications", "ai_notifications"]


def test_stop_writes_everything_redis_already_sent(
    sync_redis: redis.Redis, redis_server: RedisServer
) -> None:
    """SIGTERM right after a burst: the bridge unsubscribes and writes every message Redis
    had handed to its connection before the confirmation, none dropped from the buffers."""
    bridge = start(redis_server.url)
    wait_for(lambda: subscribed(sync_redis), what="subscribed")
    pipe = sync_redis.pipeline(transaction=False)
    for n in range(5000):
        pipe.publish(CHANNEL, event(n))
    receivers = sum(pipe.execute())
    bridge.stop()
    assert receivers == 5000
    assert stream_numbers(sync_redis, U1) == list(range(5000))
    assert not subscribed(sync_redis)


def test_silent_peer_fails_health_and_the_bridge_resubscribes(sync_redis: redis.Redis) -> None:
    """A subscribed connection that stops answering (no FIN, no RST) is noticed by an
    unanswered PING: health fails, and once the path works again the bridge resubscribes
    and bridges new messages."""
    server_port = int(sync_redis.connection_pool.connection_kwargs["port"])
    proxy = TcpProxy("127.0.0.1", server_port)
    url = f"redis://127.0.0.1:{server_port}/0"
    bridge = start(
        url,
        REDIS_PUBSUB_URL=f"redis://127.0.0.1:{proxy.port}/0",
        REDIS_PUBSUB_PING_INTERVAL_S="0.2",
        HEALTH_THRESHOLD_S="0.05",
    )
    try:
        wait_for(lambda: subscribed(sync_redis), what="subscribed")
        health = bridge.bridge.health  # type: ignore[attr-defined]
        wait_for(lambda: health()[0], what="healthy")
        proxy.freeze()
        wait_for(lambda: not health()[0], what="health to fail")
        proxy.thaw()
        wait_for(lambda: health()[0], what="healthy again")
        wait_for(lambda: proxy.accepted >= 2 and subscribed(sync_redis), what="resubscribed")
        sync_redis.publish(CHANNEL, event(7))
        wait_for(lambda: stream_numbers(sync_redis, U1) == [7], what="bridged")
        bridge.stop()
    finally:
        proxy.close()


def test_stop_while_redis_is_down_keeps_retrying_for_the_grace(
    sync_redis: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Stopped while its batch cannot be written, the bridge retries for
    BRIDGE_SHUTDOWN_GRACE_S instead of dropping it; Redis back in time gets the batch."""
    sink = RedisServer(tmp_path / "sink", appendonly=True).start()
    settings = PubSubSettings.from_env(
        Env({"REDIS_URL": sink.url, "REDIS_PUBSUB_URL": redis_server.url, "METRICS_PORT": "0",
             "BRIDGE_BACKOFF_BASE_MS": "20", "BRIDGE_BACKOFF_MAX_MS": "100",
             "BRIDGE_SHUTDOWN_GRACE_S": "30", "HEALTH_THRESHOLD_S": "0.01"})
    )  # fmt: skip
    writer = connect_sync(sink.url, client_name="sink")
    bridge = InThread(
        PubSubBridge(settings, connect_sync(redis_server.url, client_name="source"), writer)
    ).start()
    health = bridge.bridge.health  # type: ignore[attr-defined]
    try:
        wait_for(lambda: subscribed(sync_redis), what="subscribed")
        sink.stop()
        sync_redis.publish(CHANNEL, event(1))
        wait_for(lambda: not health()[0], what="failed writes")
        bridge.bridge.stop()  # SIGTERM while the batch is held
        sink = RedisServer(tmp_path / "sink", port=sink.port, appendonly=True).start()
        bridge.stop()
        assert stream_numbers(writer, U1) == [1]
    finally:
        writer.close()
        sink.stop()


def test_sharded_pubsub_bridges_spublish_and_stops_cleanly(
    sync_redis: redis.Redis, redis_server: RedisServer
) -> None:
    """With REDIS_PUBSUB_SHARDED=true the bridge SSUBSCRIBEs (a single Redis 7 serves it
    too): SPUBLISHed messages are bridged, plain PUBLISHes to the same name are not; its
    liveness PINGs are answered on the shard-subscribed connection; on stop it unsubscribes
    after writing everything Redis had sent."""
    other = "ai_updates"
    labels = {"bridge": "pubsub", "peer": "redis"}
    reconnects = REGISTRY.get_sample_value("streamer_bridge_reconnects_total", labels) or 0.0
    bridge = start(
        redis_server.url,
        REDIS_PUBSUB_SHARDED="true",
        REDIS_PUBSUB_CHANNELS=other,
        REDIS_PUBSUB_PING_INTERVAL_S="0.05",
    )
    wait_for(lambda: shard_subscribed(sync_redis, CHANNEL), what="shard-subscribed")
    wait_for(lambda: shard_subscribed(sync_redis, other), what="second channel")
    assert not subscribed(sync_redis)
    wait_for(lambda: b"cmd=ping" in sync_redis.execute_command("CLIENT", "LIST"), what="a PING")
    assert bridge.bridge.health()[0]  # type: ignore[attr-defined]
    pipe = sync_redis.pipeline(transaction=False)
    for n in range(1000):
        pipe.execute_command("SPUBLISH", CHANNEL if n % 2 else other, event(n))
    pipe.publish(CHANNEL, event(1000))  # not a shard channel message: nobody receives it
    receivers = pipe.execute()
    bridge.stop()
    assert receivers == [1] * 1000 + [0]
    assert stream_numbers(sync_redis, U1) == list(range(1000))
    channels = [f[b"pubsub_channel"] for _, f in sync_redis.xrange(U1, count=2)]
    assert channels == [other.encode(), CHANNEL.encode()]
    assert not shard_subscribed(sync_redis, CHANNEL)
    after = REGISTRY.get_sample_value("streamer_bridge_reconnects_total", labels) or 0.0
    assert after == reconnects  # every PING was answered: never resubscribed


def test_pattern_matching_agrees_with_redis_glob(sync_redis: redis.Redis) -> None:
    """redis_glob matches exactly the names Redis' own glob (SCAN MATCH) matches."""
    names = [b"a", b"ab", b"abc", b"a^c", b"a]c", b"a-c", b"a*c", b"a\\c", b"x.y", b"b!c"]
    names += [b"a\nc", b"", b"abbc", b"[ab]", b"a?c"]
    for name in names:
        sync_redis.set(b"k:" + name, 1)
    patterns = [
        b"a*",
        b"a?c",
        b"a[^b]c",
        b"a[!b]c",
        b"a[b-a]c",
        b"a\\*c",
        b"a[\\]]c",
        b"a[]c",
        b"[^]bc",
        b"a[a-]c",
        b"a\\?c",
        b"*.*",
        b"a[bc",
        b"a\\",
        b"[[]ab]",
    ]
    for pattern in patterns:
        by_redis = {k[2:] for k in sync_redis.scan_iter(match=b"k:" + pattern, count=1000)}
        ours = {n for n in names if redis_glob(pattern).fullmatch(n)}
        assert ours == by_redis, pattern
