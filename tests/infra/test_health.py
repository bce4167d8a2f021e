"""The worker's /healthz follows Redis: 503 once it has been unreachable past the threshold,
200 again after it returns."""

from __future__ import annotations

from pathlib import Path

from tests.support.metrics import scrape
from tests.support.polling import wait_for
from tests.support.processes import start_streamer
from tests.support.servers import RedisServer, free_port, streamer_env


def test_worker_health_turns_503_while_redis_is_down_and_recovers(tmp_path: Path) -> None:
    """Stopping the worker's Redis makes /healthz 503 naming redis; restarting it heals."""
    redis = RedisServer(tmp_path / "redis").start()  # our own: this test stops it
    port = free_port()
    env = streamer_env(
        redis.url,
        METRICS_HOST="127.0.0.1",
        METRICS_PORT=str(port),
        HEALTH_THRESHOLD_S="0.3",
        BLOCK_MS="100",
    )
    worker = start_streamer(["worker"], env, tmp_path / "worker.log")
    try:
        wait_for(lambda: scrape(port, "/healthz") == (200, "ok\n"), timeout=20, what="healthy")
        redis.stop()
        wait_for(
            lambda: scrape(port, "/healthz") == (503, "unreachable: redis\n"),
            timeout=15,
            what="503 while Redis is down",
        )
        redis = RedisServer(tmp_path / "redis", port=redis.port).start()
        wait_for(lambda: scrape(port, "/healthz")[0] == 200, timeout=15, what="healthy again")
    finally:
        code = worker.stop()
        redis.stop()
    assert code == 0, worker.output()
