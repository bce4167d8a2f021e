"""The HTTP publish API against a private Redis: what it writes, what it refuses (and then
writes nothing), idempotency, Redis down, probes and metrics, and the real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamer.api.settings import ApiSettings
from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.worker.main import Worker
from tests.support.api import API_KEY, ApiProcess, post, running_api
from tests.support.events import KEYS, ingress_streams, worker_settings
from tests.support.gateway import numbers, open_socket, receive, running_gateway
from tests.support.polling import eventually
from tests.support.processes import http_get
from tests.support.servers import RedisServer, free_port, streamer_env


def event(user: str = "u1", n: int = 0, **extra: object) -> dict[str, object]:
    return {"user_id": user, "event_type": "test", "data": {"n": n}, **extra}


async def written(redis: aioredis.Redis) -> int:
    """Entries in every ingress stream."""
    return sum([await redis.xlen(s) for s in ingress_streams()])


async def test_one_event_is_appended_to_its_partition_as_sent(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """POST /api/publish: 202 with the stream id of the entry, which holds the body as sent,
    in the user's partition stream."""
    body = json.dumps(event("alice"), indent=1).encode()
    async with running_api(redis_server.url) as api:
        status, answer, _ = await post(api, "/api/publish", body)
    assert status == 202 and answer["duplicate"] is False
    [(entry_id, fields)] = await redis.xrange(KEYS.ingress("alice"))
    assert entry_id.decode() == answer["id"] and fields[b"payload"] == body


async def test_a_batch_answers_the_ids_in_the_order_of_its_events(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """POST /api/publish/batch: one result per event, in order, each naming its entry."""
    events = [event(u, n) for n in range(3) for u in ("a", "b")]
    async with running_api(redis_server.url) as api:
        status, answer, _ = await post(api, "/api/publish/batch", {"events": events})
    assert status == 202
    for sent, result in zip(events, answer["results"], strict=True):
        stream = KEYS.ingress(str(sent["user_id"]))
        [(_, fields)] = await redis.xrange(stream, result["id"], result["id"])
        assert json.loads(fields[b"payload"]) == sent


@pytest.mark.parametrize(
    "header",
    [None, "apikey wrong-key-0123456789abc", "Bearer " + API_KEY, "apikey", f"apikey {API_KEY} x"],
    ids=["missing", "wrong", "other-scheme", "no-key", "two-words"],
)
async def test_requests_without_a_valid_key_get_401_and_write_nothing(
    redis: aioredis.Redis, redis_server: RedisServer, header: str | None
) -> None:
    """Missing, unknown or malformed Authorization: 401 with a challenge, nothing written."""
    headers = {} if header is None else {"Authorization": header}
    async with running_api(redis_server.url) as api:
        for path, body in (
            ("/api/publish", event()),
            ("/api/publish/batch", {"events": [event()]}),
        ):
            status, answer, response = await post(api, path, body, headers)
            assert (status, answer["error"]) == (401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("apikey ")
    assert await written(redis) == 0


async def test_keys_come_from_the_setting_and_the_file_and_the_scheme_is_case_blind(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A key of API_KEYS_FILE works beside API_KEYS; `ApiKey` is the same scheme."""
    keys_file = tmp_path / "keys"
    keys_file.write_text("# producers\nfile-key-0123456789abcdef\n\n")
    async with running_api(redis_server.url, API_KEYS_FILE=str(keys_file)) as api:
        for header in ("apikey file-key-0123456789abcdef", f"ApiKey {API_KEY}"):
            status, _, _ = await post(api, "/api/publish", event(), {"Authorization": header})
            assert status == 202
    assert await written(redis) == 2


async def test_schema_errors_are_400_naming_the_field_and_write_nothing(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A bad event, a batch with one bad event, bad JSON, a bad batch shape: 400 each, with
    the reason; nothing of any of them is written."""
    async with running_api(redis_server.url) as api:
        status, answer, _ = await post(api, "/api/publish", {"user_id": 7, "event_type": "t"})
        assert (status, answer["error"]) == (400, "schema") and "$.user_id" in answer["detail"]
        batch = {"events": [event("a"), event("b"), {"event_type": "nobody"}]}
        status, answer, _ = await post(api, "/api/publish/batch", batch)
        assert (status, answer["error"]) == (400, "schema")
        assert answer["detail"].startswith("event 2: ") and "exactly one of" in answer["detail"]
        status, answer, _ = await post(api, "/api/publish", b"{not json")
        assert (status, answer["error"]) == (400, "invalid_json")
        status, answer, _ = await post(api, "/api/publish/batch", [event()])
        assert (status, answer["error"]) == (400, "schema")
        status, answer, _ = await post(api, "/api/publish", event(data={"x": "y" * 70000}))
        assert (status, answer["error"]) == (400, "too_large")  # MAX_PAYLOAD_BYTES, per event
    assert await written(redis) == 0


async def test_a_body_over_the_limit_is_413_and_a_batch_over_the_count_is_400(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """API_MAX_BODY_BYTES bounds the body (413), API_MAX_BATCH the events of a batch (400);
    an empty batch is refused too. Nothing is written."""
    async with running_api(redis_server.url, API_MAX_BODY_BYTES="2048", API_MAX_BATCH="3") as api:
        status, answer, _ = await post(api, "/api/publish", event(data={"x": "y" * 3000}))
        assert (status, answer["error"]) == (413, "too_large")
        status, answer, _ = await post(api, "/api/publish/batch", {"events": [event()] * 4})
        assert (status, answer["error"]) == (400, "too_many_events")
        status, answer, _ = await post(api, "/api/publish/batch", {"events": []})
        assert (status, answer["error"]) == (400, "empty_batch")
        status, _, _ = await post(api, "/api/publish/batch", {"events": [event()] * 3})
        assert status == 202
    assert await written(redis) == 3


async def test_the_same_id_twice_is_written_once_and_answers_the_first_stream_id(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Idempotency by the event's id: a retried request, and a batch repeating it, write
    nothing more and answer the first id; the marker expires after PUBLISH_DEDUPE_TTL_S."""
    sent = event("u1", id="order-17-shipped")
    async with running_api(redis_server.url, PUBLISH_DEDUPE_TTL_S="120") as api:
        _, first, _ = await post(api, "/api/publish", sent)
        _, again, _ = await post(api, "/api/publish", sent)
        _, batch, _ = await post(api, "/api/publish/batch", {"events": [sent, event("u1")]})
    assert first == {"id": first["id"], "duplicate": False}
    assert again == {"id": first["id"], "duplicate": True}
    assert batch["results"][0] == again and batch["results"][1]["duplicate"] is False
    assert await redis.xlen(KEYS.ingress("u1")) == 2
    assert 0 < await redis.ttl(KEYS.of_user("u1").published("order-17-shipped")) <= 120


async def test_redis_down_is_503_with_retry_after_and_not_ready() -> None:
    """Nothing listening at REDIS_URL: publishes answer 503 with Retry-After; /readyz 503;
    /livez still 200."""
    async with running_api(f"redis://127.0.0.1:{free_port()}/0") as api:
        status, answer, response = await post(api, "/api/publish", event())
        assert (status, answer["error"]) == (503, "unavailable")
        assert int(response.headers["Retry-After"]) >= 1
        async with api.get("/readyz") as ready, api.get("/livez") as live:
            assert (ready.status, live.status) == (503, 200)


async def test_probes_metrics_and_unknown_paths(redis_server: RedisServer) -> None:
    """/healthz 200; /metrics counts requests by route template and status, and events;
    an unknown path is 404 counted under route "other"; a wrong method 405 with Allow."""
    async with running_api(redis_server.url) as api:
        await post(api, "/api/publish", event())
        async with api.get("/nowhere") as missing, api.get("/healthz") as health:
            assert (missing.status, health.status) == (404, 200)
        async with api.get("/api/publish") as wrong_method:
            assert (wrong_method.status, wrong_method.headers["Allow"]) == (405, "POST")
        async with api.get("/metrics") as response:
            text = await response.text()
    assert 'streamer_api_requests_total{route="/api/publish",status="202"}' in text
    assert 'streamer_api_requests_total{route="other",status="404"}' in text
    assert 'streamer_api_events_published_total{outcome="written"}' in text
    assert 'streamer_api_request_duration_seconds_bucket{le="0.005",route="/api/publish"}' in text


async def test_an_event_published_over_http_reaches_a_socket(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """HTTP -> partition stream -> a real worker -> a real gateway -> the user's socket."""
    async with running_gateway(redis_server.url) as gateway, running_api(redis_server.url) as api:
        conn = await open_socket(gateway.port, "dana")
        events = [event("dana", n) for n in range(3)]
        assert (await post(api, "/api/publish/batch", {"events": events}))[0] == 202
        await Worker(redis, worker_settings(redis_server.url)).drain()
        assert numbers(await receive(conn, 3)) == [0, 1, 2]
        await conn.close()


def test_settings_refuse_a_missing_or_short_key(tmp_path: Path) -> None:
    """No key at all, or a guessable one: ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=r"^API_KEYS: set it"):
        ApiSettings.from_env(Env({}))
    with pytest.raises(ConfigError, match=r"^API_KEYS: every key must be at least 16 bytes"):
        ApiSettings.from_env(Env({"API_KEYS": "short"}))
    keys_file = tmp_path / "keys"
    keys_file.write_text("short\n")
    with pytest.raises(ConfigError, match=r"^API_KEYS_FILE: every key"):
        ApiSettings.from_env(Env({"API_KEYS_FILE": str(keys_file)}))
    defaults = ApiSettings.from_env(Env({"API_KEYS": API_KEY}))
    assert (defaults.host, defaults.port, defaults.producer.dedupe_ttl_s) == (
        "127.0.0.1",
        8780,
        86400,
    )


def test_the_api_process_serves_passes_its_healthcheck_and_stops_on_sigterm(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """`streamer api`: publishes, `streamer healthcheck` finds its port from its command line,
    SIGTERM exits 0."""
    process = ApiProcess(redis_server.url, tmp_path).start()
    try:
        assert http_get(process.port, "/api/openapi.json")[0] == 200
        check = subprocess.run(
            [sys.executable, "-m", "streamer", "healthcheck", "--pid", str(process.pid)],
            env=streamer_env(redis_server.url, API_PORT=str(process.port)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.output()
        assert "Traceback" not in process.output()
    finally:
        if process.running():
            process.kill()


def test_the_process_refuses_to_start_without_keys(redis_server: RedisServer) -> None:
    """Without API_KEYS: exit 2, one line naming the variable."""
    env = streamer_env(redis_server.url)
    env.pop("API_KEYS", None)
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("streamer api: configuration error: API_KEYS:")


async def test_readiness_follows_redis(redis_server: RedisServer) -> None:
    """With Redis up the background ping keeps /readyz 200."""
    async with running_api(redis_server.url) as api:

        async def ready() -> bool:
            async with api.get("/readyz") as response:
                return response.status == 200

        await eventually(ready, what="/readyz 200")
