"""The one place clients are made: URL parsing, the hiredis-packing connection against a real
Redis and a real Redis Cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import DataError

from streamer.infra.errors import ConfigError
from streamer.infra.redis import (
    HiredisPackClusterConnection,
    HiredisPackConnection,
    HiredisPackSSLClusterConnection,
    LuaScript,
    connect,
    connect_sync,
    is_cluster,
    parse_cluster_url,
    reply_timeout_s,
)
from streamer.infra.settings import Env
from tests.support.cluster import RedisClusterServers
from tests.support.servers import RedisServer


async def test_hiredis_packer_speaks_the_same_protocol(redis_server: RedisServer) -> None:
    """The C packer handles multi-word commands, floats, unicode and bytes, and refuses
    None like redis-py's own encoder."""
    client = connect(redis_server.url, client_name="test")
    try:
        assert client.connection_pool.connection_class is HiredisPackConnection
        await client.set("k", "é")
        assert await client.get("k") == "é".encode()
        await client.zadd("z", {"m": 1.5})
        assert await client.zscore("z", "m") == 1.5
        assert await client.config_get("maxmemory-policy")  # "CONFIG GET": two words
        await client.xadd("s", {b"f": b"\x00\xff"})
        assert (await client.xrange("s"))[0][1] == {b"f": b"\x00\xff"}
        with pytest.raises((TypeError, DataError)):
            await client.set("k", None)  # type: ignore[arg-type]
    finally:
        await client.flushall()
        await client.aclose()


def test_cluster_url_names_every_startup_node() -> None:
    """redis+cluster://a:1,b:2 lists both nodes; credentials and query options apply to all."""
    parsed = parse_cluster_url("redis+cluster://u:p%40ss@a:1,b:2/0?socket_timeout=3")
    assert parsed.nodes == (("a", 1), ("b", 2))
    assert not parsed.tls
    assert parsed.options["username"] == "u"
    assert parsed.options["password"] == "p@ss"
    assert parsed.options["socket_timeout"] == 3.0


def test_cluster_url_with_tls() -> None:
    """rediss+cluster:// selects TLS; one node is enough."""
    parsed = parse_cluster_url("rediss+cluster://redis.internal:6380")
    assert parsed.nodes == (("redis.internal", 6380),) and parsed.tls


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://a",
        "redis+cluster://a:1,b",
        "redis+cluster://a:99999",
        "redis+cluster://a:1/2",
        "http://a:1",
    ],
)
def test_bad_cluster_url_names_redis_url(url: str) -> None:
    """A malformed URL fails at start-up naming REDIS_URL."""
    with pytest.raises(ConfigError, match=r"^REDIS_URL: "):
        Env({"REDIS_URL": url}).redis_url()


def test_cluster_schemes_are_valid_settings() -> None:
    """Both cluster schemes pass the settings' validation unchanged."""
    for url in ("redis+cluster://a:1,b:2", "rediss+cluster://u:p@a:1"):
        assert Env({"REDIS_URL": url}).redis_url() == url


async def test_cluster_client_packs_in_c_on_every_node(redis_cluster: RedisClusterServers) -> None:
    """connect() on a cluster URL gives a cluster client whose node connections use the C
    packer, with no internal retries; commands reach keys on every master."""
    client = connect(redis_cluster.url, client_name="test", block_ms=1000)
    try:
        assert is_cluster(client)
        keys = [f"cluster-test:{i}" for i in range(30)]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, key)
        await pipe.execute()
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        assert await pipe.execute() == [key.encode() for key in keys]
        nodes = [node for node in client.get_nodes() if node._connections]
        assert len(nodes) == len(redis_cluster.nodes)
        for node in nodes:
            assert node.connection_class is HiredisPackClusterConnection
            for c in node._connections:
                assert type(c) is HiredisPackClusterConnection
                assert c.socket_timeout == reply_timeout_s(1000)
                assert c.socket_keepalive and c.retry.get_retries() == 0
        assert client.retry.get_retries() == 0  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_tls_cluster_client_packs_in_c_over_tls() -> None:
    """rediss+cluster:// gives node connections that speak TLS and pack in C (no I/O)."""
    client = connect("rediss+cluster://u:p@127.0.0.1:1,127.0.0.1:2", client_name="test")
    try:
        nodes = list(client.nodes_manager.startup_nodes.values())  # type: ignore[attr-defined]
        assert [n.name for n in nodes] == ["127.0.0.1:1", "127.0.0.1:2"]
        assert all(n.connection_class is HiredisPackSSLClusterConnection for n in nodes)
        assert client.connection_kwargs["password"] == "p"  # type: ignore[attr-defined]
    finally:
        await client.aclose()


def test_sync_cluster_client(redis_cluster: RedisClusterServers) -> None:
    """connect_sync() on a cluster URL gives a cluster client (the bridges')."""
    client = connect_sync(redis_cluster.url, client_name="test")
    try:
        assert is_cluster(client)
        client.set("cluster-test:sync", b"1")
        assert client.get("cluster-test:sync") == b"1"
        client.delete("cluster-test:sync")
    finally:
        client.close()


def test_single_node_client_is_not_cluster(redis_server: RedisServer) -> None:
    """is_cluster() tells a single-node client apart."""
    client = connect_sync(redis_server.url, client_name="test")
    assert not is_cluster(client)
    client.close()


async def test_tls_cluster_end_to_end(tmp_path: Path) -> None:
    """A real three-master cluster speaking TLS only: rediss+cluster:// with the CA in the
    query reaches every master; pipelines and scripts work across them."""
    cluster = RedisClusterServers(tmp_path, tls=True).start()
    client = connect(cluster.url, client_name="test", block_ms=1000)
    try:
        assert cluster.url.startswith("rediss+cluster://")
        keys = [f"tls:{i}" for i in range(30)]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, key)
        await pipe.execute()
        script = LuaScript("return redis.call('GET', KEYS[1])")
        assert await script.run_many(client, [([k], []) for k in keys]) == [
            k.encode() for k in keys
        ]
        assert len([n for n in client.get_nodes() if n._connections]) == 3
    finally:
        await client.aclose()
        cluster.stop()
