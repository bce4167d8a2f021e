"""Integration test: the hiredis-packing connection against a real Redis."""

from __future__ import annotations

import pytest
from redis.exceptions import DataError

from streamer.infra.redis import HiredisPackConnection, connect
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
