"""Metrics helpers: scrape a process, read a sample, check an exposition with promtool,
and give processes an isolated key prefix on a shared private Redis."""

from __future__ import annotations

import json
import shutil
import uuid

import redis as sync_redis
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from streamer.contract.keys import Keys
from streamer.infra import metrics
from streamer.infra.settings import Env, RedisSettings
from tests.support.processes import http_get
from tests.support.servers import streamer_env


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """(HTTP status, body) of a process's endpoint; status 0 while nothing listens yet."""
    return http_get(port, path)


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is required (Debian package prometheus; .ci/run installs it)"
    return path


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


def isolated(redis_url: str) -> tuple[dict[str, str], Keys]:
    """Environment for streamer processes on the private Redis, with a key prefix of its own
    (so no flush is needed), and the keys it implies."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    env = streamer_env(redis_url, KEY_PREFIX=prefix, LOG_FORMAT="json")
    return env, Keys.from_settings(RedisSettings.from_env(Env(env)))


def add_events(url: str, keys: Keys, payloads: list[dict[str, object] | bytes]) -> None:
    """XADD each event to its user's partition stream (as streamer.producer does); raw bytes
    (poison) go to the first partition."""
    client = sync_redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for body in payloads:
        if isinstance(body, bytes):
            pipe.xadd(keys.partitions[0].stream, {"payload": body})
        else:
            pipe.xadd(keys.ingress(str(body["user_id"])), {"payload": json.dumps(body).encode()})
    pipe.execute()
    client.close()


def all_metrics() -> dict[str, MetricWrapperBase]:
    """Exposed name (counters with _total) -> metric, for every metric in streamer.infra.metrics."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            family = value.describe()[0]
            suffix = "_total" if family.type == "counter" else ""
            found[family.name + suffix] = value
    return found
