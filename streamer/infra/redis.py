"""Redis connections and Lua scripts: the one place a client is made or a script is run.

Every client comes from ``connect`` (asyncio) or ``connect_sync`` (the bridges' threads):
- replies are bytes; decoding happens at the edge (``streamer.contract.decode``);
- every reply is bounded by a timeout (the caller's longest BLOCK plus a margin), so a
  half-open connection, which would otherwise block a read forever, fails and is replaced;
- TCP keepalive probes after 10 s idle, every 5 s, 3 unanswered = dead (Linux's default is
  two hours), so the kernel notices a peer that vanished without a FIN or RST;
- redis-py's own retries are off: after a timeout a command may or may not have run, and
  only the caller knows whether running it again is harmless. Callers retry with backoff,
  with idempotent writes (see the scripts);
- commands are packed with hiredis's C packer (the asyncio client packs in Python, which
  was ~40 % of the worker's CPU per event), on every node's connections in cluster mode too.

Cluster mode: ``redis+cluster://[user:password@]host:port[,host:port…]`` (``rediss+cluster://``
for TLS) names startup nodes of a Redis Cluster; the rest of the topology is discovered. The
cluster client follows MOVED and ASK redirections and waits out TRYAGAIN by itself (a
redirected command did not run, so following it is safe), but it re-runs nothing that may
have run: its retry count is 0 like the single-node client's. A failover or CLUSTERDOWN
surfaces as a ``REDIS_ERRORS`` error to the caller, which backs off and retries; the client
re-reads the slot map before its next command.

``REDIS_ERRORS`` is what a Redis failure looks like to the loops that retry: the error tree
in ``streamer.infra.errors`` describes how the process kinds treat it.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast
from urllib.parse import unquote

import hiredis
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.retry import Retry
from redis.typing import EncodableT

# A failure of Redis or of the way to it: transient for every loop that retries.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, RedisClusterException)

# Added to the longest BLOCK a caller uses to get its reply timeout.
REPLY_MARGIN_S = 5.0
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30

KEEPALIVE_OPTIONS = {
    opt: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (opt := getattr(socket, name, None)) is not None
}

SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

Keys = Sequence[str | bytes]
Args = Sequence[EncodableT]
Calls = Sequence[tuple[Keys, Args]]


class HiredisPackConnection(aioredis.Connection):
    """A TCP connection that packs commands with hiredis's C packer."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return [_pack(args)]


class HiredisPackSSLConnection(aioredis.SSLConnection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return [_pack(args)]


class HiredisPackUnixConnection(aioredis.UnixDomainSocketConnection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return [_pack(args)]


# Per Redis address: when a connection to it last found the server gone (monotonic s).
_SERVER_GONE: dict[tuple[str, int], float] = {}


class _ClusterNodeConnection(aioredis.Connection):
    """A connection to one node of a Redis Cluster that is reopened when another connection
    to the same node found the server gone after it was opened.

    A master that restarts (or a node that fails over) leaves every idle connection to it
    dead. redis-py's cluster client drops them when a single command fails, but not when a
    pipeline does: each later pipeline to that node then failed on the next stale connection
    of the pool, one by one (a gateway's ownership writes failed for 40 s after a restart)."""

    _opened_at = 0.0
    _handshake = False  # connecting: its HELLO/CLIENT SETNAME go out on it, never reopened

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self.is_connected:
            return
        self._opened_at = time.monotonic()
        self._handshake = True
        try:
            await super().connect_check_health(*args, **kwargs)
        finally:
            self._handshake = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        gone = _SERVER_GONE.get((self.host, self.port), 0.0)
        if self.is_connected and not self._handshake and gone > self._opened_at:
            await self.disconnect()
        try:
            await super().send_packed_command(command, check_health)
        except (AttributeError, RuntimeError) as exc:
            # On CLUSTERDOWN redis-py closes every connection of the client, also those in
            # use by other tasks: this one lost its socket (or its transport) while sending.
            if self.is_connected:
                raise
            raise redis.ConnectionError("connection closed by the cluster client") from exc

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except redis.ConnectionError:
            _SERVER_GONE[(self.host, self.port)] = time.monotonic()
            raise


class HiredisPackClusterConnection(_ClusterNodeConnection, HiredisPackConnection):
    pass


class HiredisPackSSLClusterConnection(_ClusterNodeConnection, HiredisPackSSLConnection):
    pass


def _pack(args: tuple[EncodableT, ...]) -> bytes:
    command = args[0].encode() if isinstance(args[0], str) else args[0]
    if isinstance(command, bytes) and b" " in command:  # e.g. "XINFO GROUPS"
        args = (*command.split(), *args[1:])
    # hiredis rejects None and bools with TypeError, as redis-py's encoder does.
    packed: bytes = hiredis.pack_command(cast(tuple[str | int | float | bytes], args))
    return packed


_ASYNC_CLASSES: dict[str, type[aioredis.Connection] | type[aioredis.UnixDomainSocketConnection]] = {
    "redis://": HiredisPackConnection,
    "rediss://": HiredisPackSSLConnection,
    "unix://": HiredisPackUnixConnection,
}


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (multi-key commands stay in one slot)."""
    return isinstance(client, aiocluster.RedisCluster | redis.cluster.RedisCluster)


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """A ``redis+cluster://`` URL taken apart: startup nodes, TLS, and the options of one
    node's URL (credentials, query) that every node's connections share."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool
    options: dict[str, Any]


def parse_cluster_url(url: str) -> ClusterUrl:
    """Raises ValueError (without the password) for anything but a cluster URL naming at
    least one host:port, database 0 or none."""
    scheme = next((s for s in CLUSTER_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"expected {' or '.join(CLUSTER_SCHEMES)}")
    rest = url[len(scheme) :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    credentials, _, hosts = authority.rpartition("@")
    nodes = tuple(_host_port(part) for part in hosts.split(","))
    single = f"{'rediss' if scheme.startswith('rediss') else 'redis'}://"
    if credentials:
        single += credentials + "@"
    options: dict[str, Any] = dict(parse_url(f"{single}{nodes[0][0]}:{nodes[0][1]}{tail}"))
    if options.pop("db", 0) != 0:
        raise ValueError("a cluster has database 0 only")
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    return ClusterUrl(nodes, scheme.startswith("rediss"), options)


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = unquote(text.strip()).rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text.strip()!r}")
    return host.strip("[]"), int(port)


def check_url(url: str) -> None:
    """Raises ValueError (without the password) unless ``url`` is one ``connect`` accepts."""
    if url.startswith(CLUSTER_SCHEMES):
        parse_cluster_url(url)
    elif not url.startswith(SCHEMES):
        raise ValueError(f"expected a {', '.join((*SCHEMES, *CLUSTER_SCHEMES))} URL")


def reply_timeout_s(block_ms: int) -> float:
    """How long a reply may take for a client whose longest BLOCK is ``block_ms``."""
    return block_ms / 1000 + REPLY_MARGIN_S


def _options(url: str, client_name: str, block_ms: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": reply_timeout_s(block_ms),
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "client_name": client_name,
    }
    if not url.startswith("unix://"):  # keepalive is a TCP option
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = KEEPALIVE_OPTIONS
    return options


def connect(url: str, *, client_name: str, block_ms: int = 0) -> aioredis.Redis:
    """An asyncio client for ``url``. ``block_ms`` is the longest BLOCK this client's
    commands use (XREAD, XREADGROUP); replies may take that long plus REPLY_MARGIN_S.

    A cluster client is typed as ``aioredis.Redis``: the commands streamer sends have the same
    signatures on both, and ``is_cluster`` tells the callers that care apart."""
    if url.startswith(CLUSTER_SCHEMES):
        return cast(aioredis.Redis, _connect_cluster(url, client_name, block_ms))
    scheme = next((s for s in SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"not a Redis URL: {url!r}")
    return aioredis.Redis.from_url(
        url,
        connection_class=_ASYNC_CLASSES[scheme],
        retry=AsyncRetry(NoBackoff(), 0),
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        **_options(url, client_name, block_ms),
    )


def _connect_cluster(url: str, client_name: str, block_ms: int) -> aiocluster.RedisCluster:
    parsed = parse_cluster_url(url)
    client = aiocluster.RedisCluster(
        startup_nodes=[aiocluster.ClusterNode(host, port) for host, port in parsed.nodes],
        ssl=parsed.tls,
        retry=AsyncRetry(NoBackoff(), 0),
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        **{**_options(url, client_name, block_ms), **parsed.options},
    )
    # The cluster client builds every node's connections from one shared mapping, with a
    # Python-packing connection class it picks itself: give it ours, before any connects.
    packing = HiredisPackSSLClusterConnection if parsed.tls else HiredisPackClusterConnection
    client.connection_kwargs["connection_class"] = packing
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = packing
    return client


def connect_sync(url: str, *, client_name: str, block_ms: int = 0) -> redis.Redis:
    """A synchronous client with the same settings, for threads that block in a broker's
    library (the bridges). Its C packer is redis-py's default there. No periodic health
    check: a subscribed connection is pinged by its owner (bridges.pubsub.Liveness)."""
    if url.startswith(CLUSTER_SCHEMES):
        parsed = parse_cluster_url(url)
        cluster = redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in parsed.nodes
            ],
            ssl=parsed.tls,
            retry=Retry(NoBackoff(), 0),
            **{**_options(url, client_name, block_ms), **parsed.options},
        )
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), **_options(url, client_name, block_ms)
    )


def _nothing_first(pipe: Any) -> None:
    pass


class LuaScript:
    """A Lua script run with EVALSHA, loaded into Redis when Redis says it lacks it (first
    use, a restart, a failover). Scripts live in ``.lua`` files beside the code using them.

    Commands go through ``execute_command`` so that they pipeline in cluster mode too
    (redis-py refuses a pipelined ``evalsha`` there)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def load(cls, package: str, name: str) -> LuaScript:
        return cls(resources.files(package).joinpath(name).read_text(encoding="utf-8"))

    def queue(self, pipe: Any, keys: Keys, args: Args) -> None:
        """Add one call to a pipeline (async or sync)."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    async def run(self, client: aioredis.Redis, keys: Keys, args: Args) -> Any:
        """One call; raises what the script raises."""
        (reply,) = await self.run_many(client, [(keys, args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def run_many(self, client: aioredis.Redis, calls: Calls) -> list[Any]:
        """Many calls in one pipelined round trip, in order. A call that failed yields its
        exception in place of a reply. Calls Redis refused with NOSCRIPT never ran: only
        they are sent again, after loading the script, so no call runs twice."""
        _, replies = await self.run_many_after(client, _nothing_first, calls)
        return replies

    async def run_many_after(
        self, client: aioredis.Redis, first: Callable[[Any], object], calls: Calls
    ) -> tuple[list[Any], list[Any]]:
        """``run_many`` with other commands in front, in the same round trip: ``first``
        queues them on the pipeline. Returns their replies (exceptions for the failed ones,
        never sent again), then the calls' replies."""
        pipe = client.pipeline(transaction=False)
        first(pipe)
        head = len(pipe)
        for keys, args in calls:
            self.queue(pipe, keys, args)
        everything = list(await pipe.execute(raise_on_error=False))
        before, replies = everything[:head], everything[head:]
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await client.script_load(self.source)
            again = await self._pipelined(client, [calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return before, replies

    async def _pipelined(self, client: aioredis.Redis, calls: Calls) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            self.queue(pipe, keys, args)
        return list(await pipe.execute(raise_on_error=False))

    def run_many_sync(self, client: redis.Redis, calls: Calls) -> list[Any]:
        """``run_many`` for a synchronous client."""
        replies = self._pipelined_sync(client, calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            client.script_load(self.source)
            again = self._pipelined_sync(client, [calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    def _pipelined_sync(self, client: redis.Redis, calls: Calls) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            self.queue(pipe, keys, args)
        return list(pipe.execute(raise_on_error=False))
