"""Redis key names. Every key streamer touches is built here.

Ingress is split into partitions (``streamer.contract.partitions``). Everything a partition
owns shares its hash tag, so that one Lua script or MULTI may touch any of it in Redis
Cluster: its ingress stream, dead letters, push feedback, owner lease and routing marks, and
the replay logs, socket owners and markers of its users and topics. A gateway's own keys
share the tag ``{<gateway id>}``.

    {prefix}{<ptag>}:events           partition ingress stream (consumer group: CONSUMER_GROUP)
    {prefix}{<ptag>}:dlq              its dead letters
    {prefix}{<ptag>}:feedback         push tokens the providers rejected as dead
    {prefix}{<ptag>}:lease            the worker that owns the partition, and its epoch
    {prefix}{<ptag>}:routed           hash: source stream -> last entry routed from it
    {prefix}{<ptag>}:user:<uid>       a user's replay log
    {prefix}{<ptag>}:owners:<uid>     hash: gateway id -> that user's sockets on it
    {prefix}{<ptag>}:seen:<uid>:<id>  a producer's idempotency key, seen for this user
    {prefix}{<ptag>}:published:<id>   the ingress entry an event id was published as (the
                                      HTTP API's idempotency window, PUBLISH_DEDUPE_TTL_S)
    {prefix}{<ptag>}:pushed:<uid>:<channel>:<event>   a push that is done
    {prefix}{<ptag>}:topic:<name>     a topic's replay log
    {prefix}{<ptag>}:tsubs:<name>     hash: gateway id -> sockets subscribed to the topic
    STREAM_KEY (notify:events)        compatibility ingress, routed to the partitions
    {prefix}gw:{<gid>}                a gateway's inbox
    {prefix}gwusers:{<gid>}, {prefix}gwtopics:{<gid>}, {prefix}gwinfo:{<gid>},
    {prefix}gwlease:{<gid>}           the process that holds a gateway id
    {prefix}gateways, {prefix}workers sorted sets: id -> last heartbeat (Redis's clock)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamer.contract.event import NotificationPayload
from streamer.contract.partitions import partition_tag, topic_partition, user_partition
from streamer.infra.settings import RedisSettings


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The keys of one ingress partition and of the users and topics that live in it."""

    index: int
    tag: str
    prefix: str

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}{{{self.tag}}}:{suffix}"

    @property
    def stream(self) -> str:
        return self._key("events")

    @property
    def dlq(self) -> str:
        """Dead letters: original fields plus reason, error, source_id, deliveries."""
        return self._key("dlq")

    @property
    def feedback(self) -> str:
        return self._key("feedback")

    @property
    def lease(self) -> str:
        return self._key("lease")

    @property
    def routed(self) -> str:
        return self._key("routed")

    def user_log(self, user_id: str) -> str:
        return self._key(f"user:{user_id}")

    def owners(self, user_id: str) -> str:
        return self._key(f"owners:{user_id}")

    def dedupe(self, user_id: str, event_key: str) -> str:
        return self._key(f"seen:{user_id}:{event_key}")

    def push_marker(self, user_id: str, event_key: str, channel: str) -> str:
        return self._key(f"pushed:{user_id}:{channel}:{event_key}")

    def published(self, event_id: str) -> str:
        """The stream id an event ``id`` was appended to this partition as (publish dedupe)."""
        return self._key(f"published:{event_id}")

    def topic_log(self, topic: str) -> str:
        return self._key(f"topic:{topic}")

    def topic_owners(self, topic: str) -> str:
        return self._key(f"tsubs:{topic}")


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    stream: str  # the compatibility ingress stream (STREAM_KEY)
    group: str
    partition_count: int = 16
    partitions: tuple[PartitionKeys, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = tuple(
            PartitionKeys(i, partition_tag(i, self.partition_count), self.prefix)
            for i in range(self.partition_count)
        )
        object.__setattr__(self, "partitions", parts)

    @classmethod
    def from_settings(cls, redis: RedisSettings) -> Keys:
        return cls(redis.key_prefix, redis.stream_key, redis.consumer_group, redis.partitions)

    # --- partitions -----------------------------------------------------------------------

    def of_user(self, user_id: str) -> PartitionKeys:
        return self.partitions[user_partition(user_id, self.partition_count)]

    def of_topic(self, topic: str) -> PartitionKeys:
        return self.partitions[topic_partition(topic, self.partition_count)]

    def ingress(self, user_id: str) -> str:
        """The partition stream a producer appends an event for ``user_id`` to."""
        return self.of_user(user_id).stream

    def ingress_for(self, payload: NotificationPayload) -> str:
        """The partition stream an event is appended to: its user's (the first of
        ``user_ids``), its topic's, or the first partition for a broadcast. Workers forward
        what belongs to other partitions (the other users of ``user_ids``), once each."""
        return self.partition_for(payload).stream

    def partition_for(self, payload: NotificationPayload) -> PartitionKeys:
        """The partition an event is appended to (see ``ingress_for``)."""
        if payload.user_id is not None:
            return self.of_user(payload.user_id)
        if payload.user_ids:
            return self.of_user(payload.user_ids[0])
        if payload.topic is not None:
            return self.of_topic(payload.topic)
        return self.partitions[0]

    def user_log(self, user_id: str) -> str:
        return self.of_user(user_id).user_log(user_id)

    def owners(self, user_id: str) -> str:
        return self.of_user(user_id).owners(user_id)

    def dedupe(self, user_id: str, event_key: str) -> str:
        return self.of_user(user_id).dedupe(user_id, event_key)

    def push_marker(self, user_id: str, event_key: str, channel: str) -> str:
        return self.of_user(user_id).push_marker(user_id, event_key, channel)

    def topic_log(self, topic: str) -> str:
        return self.of_topic(topic).topic_log(topic)

    def topic_owners(self, topic: str) -> str:
        return self.of_topic(topic).topic_owners(topic)

    # --- the compatibility stream -----------------------------------------------------------

    @property
    def dlq(self) -> str:
        """Dead letters of the compatibility stream from before partitions (read-only now:
        ``streamer dlq`` still lists and requeues them)."""
        return f"{self.stream}:dlq"

    @property
    def feedback(self) -> str:
        """Dead push tokens of the compatibility stream's era (partitions have their own)."""
        return f"{self.prefix}feedback"

    # --- registries and gateways ----------------------------------------------------------

    @property
    def gateways(self) -> str:
        """Sorted set: gateway id -> last heartbeat (unix ms, Redis's clock)."""
        return f"{self.prefix}gateways"

    @property
    def workers(self) -> str:
        """Sorted set: worker id -> last heartbeat (unix ms, Redis's clock)."""
        return f"{self.prefix}workers"

    def inbox(self, gateway_id: str) -> str:
        return f"{self.prefix}gw:{{{gateway_id}}}"

    def gateway_users(self, gateway_id: str) -> str:
        """Set of users a gateway holds ownership entries for (cleaned when it restarts)."""
        return f"{self.prefix}gwusers:{{{gateway_id}}}"

    def gateway_topics(self, gateway_id: str) -> str:
        """Set of topics a gateway holds subscriptions for (cleaned when it restarts)."""
        return f"{self.prefix}gwtopics:{{{gateway_id}}}"

    def gateway_lease(self, gateway_id: str) -> str:
        """The process holding this gateway id (one at a time), renewed with its heartbeat."""
        return f"{self.prefix}gwlease:{{{gateway_id}}}"

    def gateway_info(self, gateway_id: str) -> str:
        """Hash written with each gateway heartbeat: sockets, users, host, port, started_ms."""
        return f"{self.prefix}gwinfo:{{{gateway_id}}}"
