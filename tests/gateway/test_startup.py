"""`streamer gateway` started while Redis is unreachable waits and retries with backoff
(one warning per attempt), answering its probes meanwhile, and serves once Redis is up."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import SECRET
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess, http_get
from tests.support.servers import RedisServer, free_port, streamer_env


def test_gateway_waits_for_redis_instead_of_exiting(tmp_path: Path) -> None:
    """With Redis down the gateway stays up: /livez 200, /readyz and /healthz 503, one
    warning per retry; when Redis starts it becomes ready; SIGTERM then exits 0."""
    redis_port, port = free_port(), free_port()
    env = streamer_env(
        f"redis://127.0.0.1:{redis_port}/0",
        JWT_SECRET=SECRET,
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_ID="gw-waiting",
    )
    gateway = StreamerProcess(["gateway"], env, tmp_path / "gateway.log").start()
    redis = None
    try:
        wait_for(lambda: http_get(port, "/livez", 1)[0] == 200, timeout=20, what="/livez")
        assert http_get(port, "/readyz", 1)[0] == 503
        assert http_get(port, "/healthz", 1)[0] == 503
        wait_for(lambda: gateway.output().count("redis unreachable") >= 2, what="a second try")
        redis = RedisServer(tmp_path / "redis", port=redis_port).start()
        wait_for(lambda: http_get(port, "/readyz", 1)[0] == 200, timeout=30, what="ready")
        assert gateway.stop() == 0
    finally:
        if gateway.running():
            gateway.kill()
        if redis is not None:
            redis.stop()
    log = gateway.output(100_000)
    assert "Traceback" not in log
    warnings = [line for line in log.splitlines() if "redis unreachable" in line]
    assert all("WARNING" in line and "retrying in" in line for line in warnings)
