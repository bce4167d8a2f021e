"""Fixtures of the Redis Cluster tests: the processes on the private cluster and streamer's
own cluster client (the cluster itself and its environment are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from tests.support.cluster import ClusterStack, RedisClusterServers


@pytest.fixture
def stack(
    redis_cluster: RedisClusterServers, cluster_env: tuple[dict[str, str], Keys], tmp_path: Path
) -> Iterator[ClusterStack]:
    """Workers, gateways and bridges on the private cluster, stopped after the test."""
    stack = ClusterStack(redis_cluster, cluster_env[0], tmp_path)
    yield stack
    stack.close()


@pytest.fixture
async def client(redis_cluster: RedisClusterServers) -> AsyncIterator[aioredis.Redis]:
    """streamer's own cluster client on the private cluster."""
    redis = connect(redis_cluster.url, client_name="test")
    yield redis
    await redis.aclose()
