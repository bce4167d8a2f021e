"""Shared fixtures: one private redis-server per test session, flushed between tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as syncredis
import redis.asyncio as aioredis

from streamer.contract.keys import Keys
from streamer.infra.redis import connect_sync
from tests.support.cluster import RedisClusterServers
from tests.support.metrics import isolated
from tests.support.servers import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server these tests started and own (never the machine's shared one)."""
    server = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the private server, emptied before each test (we own it)."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=False)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> Iterator[syncredis.Redis]:
    """A synchronous, fail-fast client (streamer's own) on the private server, emptied before
    each test (we own it)."""
    client = connect_sync(redis_server.url, client_name="test")
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def isolated_env(redis_server: RedisServer) -> tuple[dict[str, str], Keys]:
    """Environment for streamer processes on the private server under a key prefix of their
    own (no flush needed, so processes of other tests are never disturbed), and its keys."""
    return isolated(redis_server.url)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A private three-master Redis Cluster these tests started and own."""
    cluster = RedisClusterServers(Path(tmp_path_factory.mktemp("cluster"))).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_env(redis_cluster: RedisClusterServers) -> tuple[dict[str, str], Keys]:
    """``isolated_env`` on the private cluster: a key prefix of its own, REDIS_URL a
    ``redis+cluster://`` URL."""
    return isolated(redis_cluster.url)
