"""Scrape a real `streamer worker` process: promtool accepts the exposition and the
delivery counters and stream gauges follow the events that flowed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from streamer.contract.keys import Keys
from tests.support.metrics import add_events, metric_reaches, promtool, scrape, value
from tests.support.polling import wait_for
from tests.support.processes import start_streamer
from tests.support.servers import RedisServer, free_port


def test_worker_exposition_passes_promtool_and_counts_deliveries(
    redis_server: RedisServer, isolated_env: tuple[dict[str, str], Keys], tmp_path: Path
) -> None:
    """After 40 events and 2 poison entries flow, a scrape shows them and promtool passes."""
    env, keys = isolated_env
    port = free_port()
    events: list[dict[str, object] | bytes] = [
        {"user_id": f"u{n % 4}", "event_type": "progress", "data": {"n": n}} for n in range(40)
    ]
    add_events(redis_server.url, keys, [*events, b"{not json", b'{"event_type":"no user"}'])
    worker = start_streamer(
        ["worker"],
        {
            **env,
            "METRICS_PORT": str(port),
            "METRICS_HOST": "127.0.0.1",
            "STATS_INTERVAL_S": "0.1",
            "BLOCK_MS": "200",
        },
        tmp_path / "worker.log",
    )
    try:
        delivered = {"channel": "websocket", "outcome": "delivered"}
        wait_for(
            lambda: metric_reaches(port, "streamer_worker_deliveries_total", 40, **delivered),
            timeout=20,
            what="40 websocket deliveries counted",
        )
        wait_for(
            lambda: metric_reaches(port, "streamer_stream_dlq_entries", 2),
            timeout=10,
            what="the DLQ gauge sampled",
        )
        _, body = scrape(port)
        assert value(body, "streamer_worker_events_consumed_total", source="new") == 42
        assert value(body, "streamer_worker_dead_lettered_total", reason="invalid_json") == 1
        assert value(body, "streamer_worker_dead_lettered_total", reason="schema") == 1
        assert value(body, "streamer_worker_acked_total") == 42
        assert value(body, "streamer_worker_delivery_latency_seconds_count", channel="websocket")
        assert value(body, "streamer_stream_length_entries") == 42
        assert scrape(port, "/healthz") == (200, "ok\n")
        check = subprocess.run(
            [promtool(), "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
        )
        assert (check.returncode, check.stdout + check.stderr) == (0, "")
    finally:
        code = worker.stop()
    assert code == 0, worker.output()
    assert all(json.loads(line) for line in worker.output().splitlines()), "LOG_FORMAT=json"
