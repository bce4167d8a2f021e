"""Unit tests for the bridges' pure core, settings and command wiring (no I/O)."""

from __future__ import annotations

import argparse
import json
import random
from typing import cast

import pytest

from bridges.core import (
    BRIDGE_ERROR,
    BRIDGE_INVALID,
    AmqpDelivery,
    Backoff,
    PubSubMessage,
    amqp_digest,
    dead_letter_stream,
    plan_amqp,
    plan_pubsub,
    target_stream,
)
from bridges.settings import PubSubSettings, RabbitSettings
from streamer.bridging import register
from streamer.cli import COMMAND_MODULES
from streamer.contract.event import payload_decoder
from streamer.contract.keys import Keys
from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env, RedisSettings
from streamer.ops.up import plan

KEYS = Keys.from_settings(RedisSettings.from_env(Env({})))
GOOD = json.dumps({"user_id": "u1", "event_type": "t"}).encode()


def delivery(tag: int, body: bytes = GOOD, message_id: str | None = None) -> AmqpDelivery:
    return AmqpDelivery(tag, "q", "q", message_id, tag % 2 == 0, body)


def test_digest_is_scoped_by_queue_and_keyed_by_message_id_else_routing_key_and_body() -> None:
    """The redelivery digest depends on the queue and the message id when given, else on
    the routing key and body; it is short and of fixed length whatever the inputs."""
    with_id = amqp_digest(delivery(1, message_id="m-1"))
    assert with_id == amqp_digest(delivery(9, body=b"other", message_id="m-1"))
    assert with_id != amqp_digest(AmqpDelivery(1, "q2", "q", "m-1", False, GOOD))
    digest = amqp_digest(delivery(1))
    assert digest == amqp_digest(delivery(7)) != with_id
    assert digest != amqp_digest(AmqpDelivery(1, "q", "other", None, False, GOOD))
    assert digest != amqp_digest(AmqpDelivery(1, "q2", "q", None, False, GOOD))
    assert digest != amqp_digest(delivery(1, body=GOOD + b" "))
    assert len(with_id) == len(digest) == len(amqp_digest(delivery(1, message_id="m" * 200)))


def test_every_write_records_its_digest_but_only_redeliveries_and_ids_are_checked() -> None:
    """Every AMQP write records its digest (for a later redelivery to find); a first
    delivery without message id is never skipped (identical bodies are two messages); a
    redelivery, or a message id a publisher may have sent twice, is checked."""
    batch = [
        AmqpDelivery(1, "q", "q", None, False, GOOD),
        AmqpDelivery(2, "q", "q", None, True, GOOD),
        AmqpDelivery(3, "q", "q", "m-3", False, GOOD),
    ]
    writes = plan_amqp(batch, KEYS, 65536).writes
    assert [w.check for w in writes] == [False, True, True]
    assert [w.digest for w in writes] == [amqp_digest(d) for d in batch]


def event_for(user: str) -> bytes:
    return json.dumps({"user_id": user, "event_type": "t"}).encode()


def test_each_event_goes_to_its_users_ingress_partition() -> None:
    """The target of a valid event is its user's partition stream (what producers XADD to),
    never the compatibility stream; one user always lands in the same one."""
    users = [f"user-{n}" for n in range(200)]
    batch = [AmqpDelivery(n, "q", "q", None, False, event_for(u)) for n, u in enumerate(users)]
    writes = plan_amqp(batch, KEYS, 65536).writes
    assert [w.stream for w in writes] == [KEYS.ingress(u) for u in users]
    assert len({w.stream for w in writes}) == KEYS.partition_count  # 200 users hit all 16
    assert KEYS.stream not in {w.stream for w in writes}
    messages = [PubSubMessage("c", event_for(u)) for u in users]
    assert [w.stream for w in plan_pubsub(messages, KEYS, 65536)] == [w.stream for w in writes]


def test_target_stream_is_the_users_partition_under_any_partition_count() -> None:
    """target_stream follows Keys.ingress for the configured number of partitions."""
    payload = payload_decoder.decode(event_for("alice"))
    for count in (1, 4, 16, 64):
        keys = Keys("notify:", "notify:events", "g", count)
        assert target_stream(payload, keys) == keys.ingress("alice")


def test_plan_writes_valid_rejects_invalid_and_acks_through_last_valid_tag() -> None:
    """Valid deliveries become writes with AMQP metadata; invalid ones are rejected with
    the decoder's reason; the multiple-ack stops at the last valid tag."""
    batch = [delivery(1, message_id="a"), delivery(2, b"{nope"), delivery(3), delivery(4, b"{}")]
    result = plan_amqp(batch, KEYS, 65536)
    assert [w.fields["payload"] for w in result.writes] == [GOOD, GOOD]
    assert result.writes[0].fields["amqp_message_id"] == "a"
    assert "amqp_message_id" not in result.writes[1].fields
    assert result.writes[1].fields["amqp_redelivered"] == "0"
    assert {w.stream for w in result.writes} == {KEYS.ingress("u1")}
    assert [(r.tag, r.reason) for r in result.rejects] == [(2, "invalid_json"), (4, "schema")]
    assert result.ack_through == 3


def test_a_delivery_the_core_cannot_plan_is_rejected_not_raised() -> None:
    """An unexpected error planning one delivery rejects that one with bridge_error; the
    deliveries around it are still written and acked."""
    poison = AmqpDelivery(2, "q", cast(str, b"rk\xff"), None, False, GOOD)  # a pika oddity
    result = plan_amqp([delivery(1), poison, delivery(3)], KEYS, 65536)
    assert [(r.tag, r.reason) for r in result.rejects] == [(2, BRIDGE_ERROR)]
    assert "AttributeError" in result.rejects[0].error
    assert (len(result.writes), result.ack_through) == (2, 3)


def test_plan_of_only_invalid_messages_acks_nothing() -> None:
    """A batch with no valid message has nothing to ack."""
    oversized = json.dumps({"user_id": "u", "event_type": "t", "data": {"x": "a" * 200}})
    result = plan_amqp([delivery(5, oversized.encode())], KEYS, 100)
    assert result.ack_through is None
    assert [r.reason for r in result.rejects] == ["too_large"]


def test_pubsub_plan_sends_invalid_to_dlq_with_contract_fields() -> None:
    """Invalid Pub/Sub messages go to the first partition's DLQ with reason bridge_invalid,
    the decode error, source_id pubsub:<channel> and deliveries; nothing carries a digest
    (nothing redelivers Pub/Sub messages)."""
    writes = plan_pubsub(
        [PubSubMessage("general", GOOD), PubSubMessage("general", b"\xff")], KEYS, 65536
    )
    assert writes[0].stream == KEYS.ingress("u1")
    assert writes[0].fields == {"payload": GOOD, "pubsub_channel": "general"}
    dead = writes[1]
    assert dead.stream == dead_letter_stream(KEYS) == KEYS.partitions[0].dlq
    assert dead.fields["reason"] == BRIDGE_INVALID
    assert str(dead.fields["error"]).startswith("invalid_utf8:")
    assert dead.fields["source_id"] == "pubsub:general"
    assert dead.fields["deliveries"] == "1"
    assert [(w.digest, w.check) for w in writes] == [(None, False), (None, False)]


def test_backoff_grows_is_capped_and_resets() -> None:
    """Delays grow exponentially with jitter, never beyond the cap, and restart on reset."""
    backoff = Backoff(100, 1000, random.Random(1))
    delays = [backoff.next_s() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[4:])
    backoff.reset()
    assert backoff.next_s() <= 0.1


def test_settings_defaults_follow_the_seed_names() -> None:
    """Defaults: the seed queue and channel names, prefetch 2000 (batches of 1000),
    declared queues."""
    rabbit = RabbitSettings.from_env(Env({}))
    assert rabbit.queues == ("ai_updates_notifications",)
    assert rabbit.url == "amqp://guest:guest@127.0.0.1:5672/"
    assert (rabbit.prefetch, rabbit.batch_max, rabbit.declare_queues) == (2000, 1000, True)
    assert rabbit.dedupe_ttl_s == 3600  # RabbitMQ's 30 min consumer timeout plus a restart
    assert rabbit.common.metrics.port != 9100
    pubsub = PubSubSettings.from_env(Env({"REDIS_PUBSUB_CHANNELS": "a, general_notifications"}))
    assert pubsub.channels == ("general_notifications", "a")
    assert pubsub.source_url == pubsub.common.redis.url
    assert not pubsub.sharded


def test_sharded_pubsub_takes_channels_not_patterns() -> None:
    """REDIS_PUBSUB_SHARDED=true selects SSUBSCRIBE; sharded Pub/Sub has no patterns, so
    patterns with it fail at start-up naming both settings."""
    sharded = PubSubSettings.from_env(Env({"REDIS_PUBSUB_SHARDED": "true"}))
    assert sharded.sharded and sharded.channels == ("general_notifications",)
    env = {"REDIS_PUBSUB_SHARDED": "true", "REDIS_PUBSUB_PATTERNS": "ai.*"}
    with pytest.raises(ConfigError, match=r"^REDIS_PUBSUB_PATTERNS.*REDIS_PUBSUB_SHARDED"):
        PubSubSettings.from_env(Env(env))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"RABBITMQ_URL": "http://x"}, "RABBITMQ_URL"),
        ({"RABBITMQ_PREFETCH": "0"}, "RABBITMQ_PREFETCH"),
        ({"RABBITMQ_DECLARE_QUEUES": "maybe"}, "RABBITMQ_DECLARE_QUEUES"),
        ({"BRIDGE_DEDUPE_TTL_S": "5"}, "BRIDGE_DEDUPE_TTL_S"),
    ],
)
def test_bad_rabbit_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A bad bridge setting fails at start-up naming the variable."""
    with pytest.raises(ConfigError, match=f"^{variable}"):
        RabbitSettings.from_env(Env(env))


def test_cli_has_both_bridge_commands() -> None:
    """`streamer bridge rabbitmq|pubsub` parse to their handlers."""
    assert "streamer.bridging" in COMMAND_MODULES
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for source in ("rabbitmq", "pubsub"):
        args = parser.parse_args(["bridge", source])
        assert args.handler.__name__ == f"handle_{source}"


def test_up_runs_bridges_only_when_enabled() -> None:
    """`streamer up` starts each bridge when its ENABLE_* flag is on, with its own port."""
    names = [s.name for s in plan(Env({}), {}, 1)]
    assert not any(n.startswith("bridge") for n in names)
    env = {"ENABLE_RABBITMQ_CONSUMER": "true", "ENABLE_REDIS_CONSUMER": "1"}
    specs = {s.name: s for s in plan(Env(env), dict(env), 1)}
    assert specs["bridge-rabbitmq"].argv[-2:] == ["bridge", "rabbitmq"]
    assert specs["bridge-pubsub"].argv[-2:] == ["bridge", "pubsub"]
    ports = [s.env.get("METRICS_PORT") for s in specs.values()]
    assert len(set(ports)) == len(ports)
