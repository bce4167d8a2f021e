"""The bridges' only writer to Redis: idempotent XADDs, one pipelined round trip per batch.

Redis errors are mapped here, once, to ``RetryableError``: the caller keeps the batch
un-acked and tries again later; the Lua marker makes the retry harmless.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from bridges.core import StreamWrite, marker_key
from streamer.errors import RetryableError
from streamer.keys import Keys

# Next to this module rather than importlib.resources: an editable install made before
# bridges/ had an __init__.py maps it as a namespace package, which resources rejects.
_SCRIPT = (Path(__file__).parent / "lua" / "xadd_once.lua").read_text()


# TCP keepalive probes after 10 s idle, every 5 s, 3 unanswered = dead (Linux defaults: two
# hours idle). Lets the kernel fail a connection whose peer vanished without a FIN/RST.
_KEEPALIVE = {
    opt: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (opt := getattr(socket, name, None)) is not None
}


def connect(url: str, client_name: str, timeout_s: float = 5.0) -> redis.Redis:
    """A synchronous client that fails fast: the bridge owns retrying, so that its waits
    can interleave with the broker's heartbeats."""
    return redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=min(timeout_s, 2.0),
        socket_timeout=timeout_s,
        socket_keepalive=True,
        socket_keepalive_options=_KEEPALIVE,
        retry=Retry(NoBackoff(), 0),
        client_name=client_name,
    )


class IdempotentWriter:
    def __init__(self, client: redis.Redis, keys: Keys, marker_ttl_s: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = marker_ttl_s
        self._sha: str | None = None

    def write(self, writes: Sequence[StreamWrite]) -> list[str | None]:
        """The new entry id of each write, or None where it was a duplicate, in order.

        Raises RetryableError when Redis cannot take the batch; some writes may have
        happened, which is why every write carries a marker."""
        if not writes:
            return []
        try:
            replies = self._execute(writes)
            if any(isinstance(r, NoScriptError) for r in replies):
                # Redis restarted and lost its script cache; the redo is idempotent.
                self._sha = None
                replies = self._execute(writes)
        except (RedisError, OSError) as exc:
            raise RetryableError(f"redis: {exc}") from exc
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None:
            raise RetryableError(f"redis: {failed}") from failed
        return [None if r is None else _text(r) for r in replies]

    def _execute(self, writes: Sequence[StreamWrite]) -> list[object]:
        if self._sha is None:
            self._sha = str(self._client.script_load(_SCRIPT))
        pipe = self._client.pipeline(transaction=False)
        for w in writes:
            args: list[bytes | str | int] = [self._ttl_s, 1 if w.check else 0]
            for name, value in w.fields.items():
                args += (name, value)
            pipe.evalsha(self._sha, 2, w.stream, marker_key(self._keys, w.stream, w.marker), *args)
        return list(pipe.execute(raise_on_error=False))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
