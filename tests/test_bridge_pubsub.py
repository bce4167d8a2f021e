"""Integration tests: the Redis Pub/Sub bridge against private redis-servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from bridges.idempotent import connect
from bridges.pubsub import PubSubBridge
from bridges.settings import PubSubSettings
from streamer.settings import Env
from tests.support.events import KEYS
from tests.support.rabbit import InThread, event, stream_numbers
from tests.support.servers import RedisServer, wait_for

CHANNEL = "general_notifications"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on the session's private Redis, emptied first (we own that server)."""
    c = connect(redis_server.url, "test")
    c.flushall()
    yield c
    c.close()


def start(url: str, **env: str) -> InThread:
    base = {
        "REDIS_URL": url,
        "METRICS_PORT": "0",
        "BRIDGE_BACKOFF_BASE_MS": "20",
        "BRIDGE_BACKOFF_MAX_MS": "200",
    }
    settings = PubSubSettings.from_env(Env({**base, **env}))
    bridge = PubSubBridge(settings, connect(url, "source"), connect(url, "sink"))
    return InThread(bridge).start()


def subscribed(client: redis.Redis, channel: str = CHANNEL, patterns: int = 0) -> bool:
    counts = dict(client.pubsub_numsub(channel))
    return counts.get(channel.encode(), 0) >= 1 and client.pubsub_numpat() >= patterns


def test_messages_reach_the_stream_and_invalid_ones_the_dlq(
    client: redis.Redis, redis_server: RedisServer
) -> None:
    """Valid messages on the channel and on a pattern reach the stream with their channel;
    an invalid one lands in the DLQ with reason bridge_invalid and source pubsub:<channel>."""
    bridge = start(redis_server.url, REDIS_PUBSUB_PATTERNS="ai.*")
    wait_for(lambda: subscribed(client, patterns=1), what="subscribed")
    for n in range(300):
        client.publish(CHANNEL if n % 3 else "ai.progress", event(n))
    client.publish(CHANNEL, b'{"user_id": "u1"')
    wait_for(lambda: client.xlen(KEYS.stream) >= 300 and client.xlen(KEYS.dlq) >= 1)
    bridge.stop()
    assert stream_numbers(client, KEYS.stream) == list(range(300))
    channels = [f[b"pubsub_channel"] for _, f in client.xrange(KEYS.stream, count=2)]
    assert channels == [b"ai.progress", CHANNEL.encode()]
    [(_, dead)] = client.xrange(KEYS.dlq)
    assert dead[b"reason"] == b"bridge_invalid"
    assert dead[b"source_id"] == f"pubsub:{CHANNEL}".encode()
    assert dead[b"error"].startswith(b"invalid_json:")
    assert (dead[b"payload"], dead[b"deliveries"]) == (b'{"user_id": "u1"', b"1")
    # Markers only cover this process's own retries: short-lived, not hours of memory.
    ttls = [client.ttl(key) for key in client.scan_iter(match="*bridged*", count=1000)]
    assert len(ttls) == 301 and 0 < max(ttls) <= 60


def test_resubscribes_after_a_redis_outage(tmp_path: Path) -> None:
    """After Redis restarts the bridge subscribes again and bridges new messages."""
    server = RedisServer(tmp_path / "redis").start()
    client = connect(server.url, "test")
    labels = {"bridge": "pubsub", "peer": "redis"}
    before = REGISTRY.get_sample_value("streamer_bridge_reconnects_total", labels) or 0.0
    bridge = start(server.url)
    try:
        wait_for(lambda: subscribed(client), what="subscribed")
        server.stop()
        server = RedisServer(tmp_path / "redis", port=server.port).start()
        wait_for(lambda: subscribed(client), what="subscribed again")
        client.publish(CHANNEL, json.dumps({"user_id": "u", "event_type": "t"}))
        wait_for(lambda: client.xlen(KEYS.stream) == 1, what="bridged after the outage")
        bridge.stop()
    finally:
        client.close()
        server.stop()
    after = REGISTRY.get_sample_value("streamer_bridge_reconnects_total", labels) or 0.0
    assert after == before + 1
