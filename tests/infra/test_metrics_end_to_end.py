"""A real worker and a real gateway: after events flow to an open socket, both processes'
delivery counters have moved, promtool accepts the gateway's exposition, and `streamer
status` sees the gateway with its socket."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import jwt
import redis as sync_redis
import redis.asyncio as aioredis
from websockets.sync.client import connect

from streamer.contract.keys import Keys
from streamer.ops.status import Thresholds, collect
from tests.support.metrics import add_events, metric_reaches, promtool, scrape, value
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess, start_streamer
from tests.support.servers import RedisServer, free_port

SECRET = "e2e-test-secret-that-is-long-enough-for-hs256"
EVENTS = 25


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 300}, SECRET, "HS256")


def start_pair(
    env: dict[str, str], tmp_path: Path
) -> tuple[StreamerProcess, int, StreamerProcess, int]:
    worker_port, gateway_port = free_port(), free_port()
    worker = start_streamer(
        ["worker"],
        {**env, "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(worker_port), "BLOCK_MS": "200"},
        tmp_path / "worker.log",
    )
    gateway = start_streamer(
        ["gateway"],
        {
            **env,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_ID": "gw-e2e",
            "GATEWAY_HEARTBEAT_MS": "200",
            "GATEWAY_BLOCK_MS": "200",
            "JWT_SECRET": SECRET,
        },
        tmp_path / "gateway.log",
    )
    for port, what in ((worker_port, "worker"), (gateway_port, "gateway")):
        wait_for(lambda p=port: scrape(p, "/healthz")[0] == 200, timeout=20, what=f"{what} up")
    return worker, worker_port, gateway, gateway_port


def test_counters_move_on_worker_and_gateway_after_events_flow(
    redis_server: RedisServer, isolated_env: tuple[dict[str, str], Keys], tmp_path: Path
) -> None:
    """25 events reach an open socket; worker and gateway metrics both count them."""
    env, keys = isolated_env
    worker, worker_port, gateway, gateway_port = start_pair(env, tmp_path)
    client = sync_redis.Redis.from_url(redis_server.url)
    try:
        url = f"ws://127.0.0.1:{gateway_port}/ws/u-e2e?token={token('u-e2e')}"
        with connect(url, open_timeout=10, proxy=None) as socket:
            wait_for(lambda: client.hexists(keys.owners("u-e2e"), "gw-e2e"), what="ownership")
            add_events(
                redis_server.url,
                keys,
                [
                    {"user_id": "u-e2e", "event_type": "progress", "data": {"n": n}}
                    for n in range(EVENTS)
                ],
            )
            frames = [json.loads(socket.recv(timeout=10)) for _ in range(EVENTS)]
            assert [f["content"]["n"] for f in frames] == list(range(EVENTS))
            delivered = {"channel": "websocket", "outcome": "delivered"}
            wait_for(
                lambda: metric_reaches(
                    worker_port, "streamer_worker_deliveries_total", EVENTS, **delivered
                ),
                what="worker deliveries counted",
            )
            _, worker_body = scrape(worker_port)
            assert value(worker_body, "streamer_worker_inbox_appends_total") == EVENTS
            assert (
                value(
                    worker_body,
                    "streamer_worker_delivery_latency_seconds_count",
                    channel="websocket",
                )
                == EVENTS
            )
            wait_for(
                lambda: metric_reaches(
                    gateway_port, "streamer_gateway_messages_sent_total", EVENTS
                ),
                what="gateway frames counted",
            )
            _, gateway_body = scrape(gateway_port)
            assert value(gateway_body, "streamer_gateway_open_sockets") == 1
            assert value(gateway_body, "streamer_gateway_sockets_opened_total") == 1
            assert value(gateway_body, "streamer_gateway_inbox_entries_total") == EVENTS
            assert value(gateway_body, "streamer_gateway_delivery_latency_seconds_count") == EVENTS
            check = subprocess.run(
                [promtool(), "check", "metrics"],
                input=gateway_body,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert (check.returncode, check.stdout + check.stderr) == (0, "")
            wait_for(
                lambda: client.hget(keys.gateway_info("gw-e2e"), "sockets") == b"1",
                what="gateway heartbeat with its socket",
            )
        wait_for(
            lambda: metric_reaches(
                gateway_port, "streamer_gateway_sockets_closed_total", 1, code="1000"
            ),
            what="the close counted with code 1000",
        )
        assert value(scrape(gateway_port)[1], "streamer_gateway_open_sockets") == 0
    finally:
        client.close()
        codes = (worker.stop(), gateway.stop())
    assert codes == (0, 0), worker.output() + gateway.output()


async def test_status_lists_the_running_gateway_and_worker(
    redis_server: RedisServer, isolated_env: tuple[dict[str, str], Keys], tmp_path: Path
) -> None:
    """`streamer status` reports the live gateway (with its address) and the live worker."""
    env, keys = isolated_env
    worker, _, gateway, gateway_port = start_pair(env, tmp_path)
    client = aioredis.Redis.from_url(redis_server.url)
    probe = sync_redis.Redis.from_url(redis_server.url)
    try:
        for key, member in ((keys.gateways, "gw-e2e"), (keys.workers, None)):
            wait_for(
                lambda k=key, m=member: probe.zscore(k, m) if m else probe.zcard(k),
                what=f"a heartbeat in {key}",
            )
        report = await collect(client, keys, Thresholds(10_000, 1000, 15_000))
        assert [g.id for g in report.gateways] == ["gw-e2e"]
        assert report.gateways[0].address is not None
        assert report.gateways[0].address.endswith(f":{gateway_port}")
        assert len(report.workers) == 1 and report.healthy
    finally:
        probe.close()
        await client.aclose()
        codes = (worker.stop(), gateway.stop())
    assert codes == (0, 0), worker.output() + gateway.output()
