"""Scrape a real `streamer worker` process: promtool accepts the exposition and the
delivery counters and stream gauges follow the events that flowed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families

from streamer.keys import Keys
from streamer.settings import Env, RedisSettings
from tests.support.servers import RedisServer, free_port, streamer_env, wait_for


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is required (Debian package prometheus; .ci/run installs it)"
    return path


# No proxy from the environment may stand between a test and 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """(HTTP status, body); status 0 while nothing listens yet."""
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def value(exposition: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of an exposition; 0 when absent (a counter never touched)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def metric_reaches(port: int, name: str, target: float, **labels: str) -> bool:
    status, body = scrape(port)
    return status == 200 and value(body, name, **labels) >= target


class Process:
    """A streamer subprocess with its log kept for the failure message."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "streamer", *args],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def isolated(redis_url: str) -> tuple[dict[str, str], Keys]:
    """Environment for streamer processes on the private Redis, with a key prefix of its own
    (so no flush is needed), and the keys it implies."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    env = streamer_env(redis_url, KEY_PREFIX=prefix, LOG_FORMAT="json")
    return env, Keys.from_settings(RedisSettings.from_env(Env(env)))


@pytest.fixture
def isolated_env(redis_server: RedisServer) -> tuple[dict[str, str], Keys]:
    return isolated(redis_server.url)


def add_events(url: str, keys: Keys, payloads: list[dict[str, object] | bytes]) -> None:
    client = sync_redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for body in payloads:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        pipe.xadd(keys.stream, {"payload": raw})
    pipe.execute()
    client.close()


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
    worker = Process(
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
