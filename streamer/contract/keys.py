"""Redis key names. Every key streamer touches is built here.

Keys of one user carry the hash tag ``{uid}`` so a Lua script may touch them together
in Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.infra.settings import RedisSettings


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    stream: str
    group: str

    @classmethod
    def from_settings(cls, redis: RedisSettings) -> Keys:
        return cls(prefix=redis.key_prefix, stream=redis.stream_key, group=redis.consumer_group)

    @property
    def dlq(self) -> str:
        """Dead letters: original fields plus reason, error, source_id, deliveries."""
        return f"{self.stream}:dlq"

    @property
    def gateways(self) -> str:
        """Sorted set: gateway id -> last heartbeat (unix ms)."""
        return f"{self.prefix}gateways"

    @property
    def workers(self) -> str:
        """Sorted set: worker id -> last heartbeat (unix ms)."""
        return f"{self.prefix}workers"

    @property
    def feedback(self) -> str:
        """Stream of push tokens the providers rejected as dead."""
        return f"{self.prefix}feedback"

    def user_log(self, user_id: str) -> str:
        return f"{self.prefix}user:{{{user_id}}}"

    def owners(self, user_id: str) -> str:
        return f"{self.prefix}owners:{{{user_id}}}"

    def dedupe(self, user_id: str, event_key: str) -> str:
        return f"{self.prefix}seen:{{{user_id}}}:{event_key}"

    def push_marker(self, user_id: str, event_key: str, channel: str) -> str:
        return f"{self.prefix}pushed:{{{user_id}}}:{channel}:{event_key}"

    def inbox(self, gateway_id: str) -> str:
        return f"{self.prefix}gw:{gateway_id}"

    def gateway_users(self, gateway_id: str) -> str:
        """Set of users a gateway holds ownership entries for (cleaned when it restarts)."""
        return f"{self.prefix}gwusers:{gateway_id}"

    def gateway_info(self, gateway_id: str) -> str:
        """Hash written with each gateway heartbeat: sockets, users, host, port, started_ms."""
        return f"{self.prefix}gwinfo:{gateway_id}"
