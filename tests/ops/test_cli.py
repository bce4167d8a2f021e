"""The `streamer` command line as an operator meets it: one line and a documented exit code
for every failure an operator can cause, never a traceback; help that lists the
environment; a parser that imports no process module."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import redis as syncredis

from streamer.cli import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_FAILED, build_parser
from streamer.ops.environment import COMMANDS
from tests.support.events import KEYS
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess
from tests.support.servers import RedisServer, free_port, streamer_env

SENTINEL = "18446744073709551615"


def unreachable_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def streamer(
    *args: str, url: str | None = None, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = streamer_env(url or unreachable_url(), **extra)
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def url_of(client: syncredis.Redis) -> str:
    return f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"


def one_line(result: subprocess.CompletedProcess[str], stream: str = "stderr") -> str:
    """The single line a failing command printed (and nothing else there)."""
    text: str = getattr(result, stream)
    assert "Traceback" not in result.stderr, result.stderr
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["publish", "--user", "u", "--type", "t", "--count", "0"], "--count: must be >= 1, got 0"),
        (["publish", "--user", "u", "--type", "t", "--count", "-3"], "--count: must be >= 1"),
        (["publish", "--user", "u", "--type", "t", "--data", "{broken"], "--data: not valid JSON"),
        (["publish", "--user", "u", "--type", "t", "--data", "[1]"], "expected a JSON object"),
        (["publish", "--user", "a b", "--type", "t"], "--user: not a valid user id"),
        (["publish", "--user", "{u}", "--type", "t"], "--user: not a valid user id"),
        (["publish", "--user", "u", "--type", "t", "--channels", "pigeon"], "not a valid event"),
        (["publish", "--type", "t"], "--user and --type are required"),
        (["token", "--user", "u", "--ttl-s", "-5"], "--ttl-s: must be >= 0, got -5"),
        (["token", "--user", "a\tb"], "--user: not a valid user id"),
        (["replay", "--from", "2024-05-02", "--to", "2024-05-01"], "reversed range"),
        (["replay", "--from", "99999999999999", "--to", "+"], "is in the future"),
        (["replay", "--from", "+", "--to", "+"], "is in the future"),
        (["up", "--workers", "0"], "--workers: must be >= 1"),
        (["dlq", "list", "--limit", "0"], "--limit must be >= 1"),
    ],
)
def test_nonsense_arguments_exit_2_with_one_line(args: list[str], expected: str) -> None:
    """Bad arguments are refused before anything connects: exit 2, one line naming them."""
    result = streamer(*args, JWT_SECRET="x" * 32)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert expected in one_line(result)
    assert SENTINEL not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "--user", "u", "--type", "t"],
        ["dlq", "list"],
        ["dlq", "requeue", "--all"],
        ["replay", "--from", "-", "--to", "+"],
    ],
)
def test_unreachable_redis_is_one_line_exit_1(args: list[str]) -> None:
    """Redis down: one line naming the Redis the command tried, exit 1."""
    url = unreachable_url()
    result = streamer(*args, url=url)
    assert result.returncode == EXIT_FAILED
    line = one_line(result)
    assert line.startswith(f"streamer {args[0]}: cannot reach Redis at {url}: "), line


def test_status_with_unreachable_redis_is_an_unhealthy_verdict() -> None:
    """`status` stays a check: one verdict line, exit 1."""
    result = streamer("status")
    assert result.returncode == EXIT_FAILED
    assert one_line(result, "stdout").startswith("status: UNHEALTHY: redis unreachable")


def test_invalid_redis_url_is_a_configuration_error() -> None:
    """A REDIS_URL that is no Redis URL: exit 2 naming the variable."""
    result = streamer("status", url="http://127.0.0.1:1")
    assert result.returncode == EXIT_BAD_INPUT
    assert "REDIS_URL: expected a redis://" in one_line(result)


def test_enabled_push_without_settings_names_every_missing_variable() -> None:
    """APNs and FCM on with nothing configured: one message naming all of it, exit 2."""
    result = streamer("worker", ENABLE_APNS_PUSH="1", ENABLE_FCM_PUSH="true", APNS_TOPIC="app")
    assert result.returncode == EXIT_BAD_INPUT
    line = one_line(result)
    for name in ("APNS_CERT_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "FCM_SERVICE_ACCOUNT_FILE"):
        assert name in line
    assert "APNS_TOPIC" not in line


def test_ports_in_use_are_one_line_exit_1(redis_server: RedisServer) -> None:
    """A worker's METRICS_PORT or a gateway's GATEWAY_PORT already taken: one line naming
    the variable and the address, exit 1 (never taken for a Redis error and retried)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        worker = streamer(
            "worker", url=redis_server.url, METRICS_PORT=port, METRICS_HOST="127.0.0.1"
        )
        gateway = streamer(
            "gateway",
            url=redis_server.url,
            GATEWAY_PORT=port,
            GATEWAY_HOST="127.0.0.1",
            JWT_SECRET="x" * 32,
        )
    assert worker.returncode == EXIT_FAILED, worker.stderr
    assert f"METRICS_PORT: cannot listen on 127.0.0.1:{port}" in worker.stderr.splitlines()[-1]
    assert gateway.returncode == EXIT_FAILED, gateway.stderr
    assert f"GATEWAY_PORT: cannot listen on 127.0.0.1:{port}" in one_line(gateway)
    assert "Traceback" not in worker.stderr


def test_output_cut_by_head_exits_141_quietly(sync_redis: syncredis.Redis) -> None:
    """`streamer dlq list | head -1`: the reader goes away; exit 141, nothing on stderr."""
    pipe = sync_redis.pipeline(transaction=False)
    for _ in range(3000):
        pipe.xadd(KEYS.dlq, {"payload": b"{}", "reason": b"schema", "error": b"x" * 40})
    pipe.execute()
    env = streamer_env(url_of(sync_redis))
    listing = subprocess.Popen(
        [sys.executable, "-m", "streamer", "dlq", "list", "--limit", "3000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert listing.stdout is not None and listing.stderr is not None
    assert listing.stdout.readline()
    listing.stdout.close()
    assert listing.wait(60) == EXIT_BROKEN_PIPE
    assert listing.stderr.read() == b""


def test_replay_never_shows_internal_sentinels(sync_redis: syncredis.Redis) -> None:
    """`+`, future times and whole milliseconds are shown as typed, not as 2^64-1 ids."""
    url = url_of(sync_redis)
    sync_redis.xadd(KEYS.stream, {"payload": json.dumps({"user_id": "u", "event_type": "t"})})
    sync_redis.xadd(KEYS.dlq, {"payload": b"{}", "reason": b"schema"})
    runs = [
        streamer("replay", "--from", "-", "--to", "+", "--dry-run", url=url),
        streamer("replay", "--from", "1h", "--to", "2099-01-01", "--dry-run", url=url),
        streamer("replay", "--from", "-", "--to", "+", "--source", "dlq", "--dry-run", url=url),
        streamer("dlq", "purge", "--before", "+", "--yes", url=url),
    ]
    for result in runs:
        assert result.returncode == 0, result.stderr
        assert SENTINEL not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "from - (the oldest entry) to 17" in runs[0].stderr  # `+` pinned to the last id


def test_help_of_every_command_lists_its_environment() -> None:
    """`streamer X --help` says what X does and lists the variables it reads, with defaults."""
    parser = build_parser()
    for command, variables in COMMANDS.items():
        sub = subparser(parser, command.split())
        text = sub.format_help()
        assert sub.description, command
        assert "environment (empty = unset" in text, command
        for name in variables:
            assert f"  {name} " in text, f"{command}: {name}"


def subparser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = actions[0].choices[word]
    return parser


def test_parsing_imports_no_process_module() -> None:
    """`streamer --help` loads neither the gateway (websockets, PyJWT), the push senders,
    nor the bridges (pika): process modules load only when their command runs."""
    probe = (
        "import sys; from streamer.cli import build_parser; build_parser().format_help();"
        "heavy = ('websockets', 'jwt', 'aiohttp', 'aioapns', 'pika', 'bridges', 'rich');"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_version() -> None:
    """`streamer --version` prints `streamer <version from the package metadata>`."""
    result = streamer("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"streamer {metadata.version('streamer')}"


def test_publish_and_a_worker_over_a_unix_socket(tmp_path: Path) -> None:
    """unix:// Redis URLs work end to end: `streamer publish` adds an event over the socket
    and a worker connected the same way delivers it to the user's log."""
    sock = tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "redis", unixsocket=sock).start()
    url = f"unix://{sock}?db=0"
    worker = StreamerProcess(["worker"], streamer_env(url), tmp_path / "worker.log")
    try:
        worker.start()
        published = streamer("publish", "--user", "unix-user", "--type", "t", url=url)
        assert published.returncode == 0, published.stderr
        client = syncredis.Redis(unix_socket_path=str(sock))
        wait_for(
            lambda: client.xlen(KEYS.user_log("unix-user")) == 1,
            timeout=30,
            what=f"delivery over the unix socket\n{worker.output()}",
        )
        client.close()
        assert worker.stop() == 0, worker.output()
        assert "Traceback" not in worker.output()
    finally:
        if worker.running():
            worker.kill()
        server.stop()


def just(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """A recipe of this repository's justfile, with the suite's virtualenv."""
    env = streamer_env(url or unreachable_url(), STREAMER_VENV=sys.prefix)
    return subprocess.run(
        ["just", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_just_replay_keeps_quoted_arguments_whole(redis_server: RedisServer) -> None:
    """`just replay "2024-05-01 10:00" +` passes the time as one argument."""
    client = syncredis.Redis.from_url(redis_server.url)
    client.xadd(KEYS.stream, {"payload": b"{}"})
    client.close()
    result = just("replay", "2024-05-01 10:00", "+", "--dry-run", url=redis_server.url)
    assert result.returncode == 0, result.stderr
    assert "from 1714557600000-0 (2024-05-01T10:00:00.000Z)" in result.stderr


def test_just_bench_lists_names_and_refuses_unknown_ones() -> None:
    """`just bench --list` names the benchmarks; an unknown name exits 2 running nothing."""
    listed = just("bench", "--list")
    assert listed.returncode == 0 and "e2e" in listed.stdout and "worker" in listed.stdout
    started = time.monotonic()
    unknown = just("bench", "wrker")
    assert unknown.returncode == EXIT_BAD_INPUT
    assert "unknown benchmark wrker; available: worker e2e" in unknown.stderr
    assert time.monotonic() - started < 30


def test_broker_down_is_one_warning_per_retry(redis_server: RedisServer, tmp_path: Path) -> None:
    """The RabbitMQ bridge with its broker down logs one warning line per retry, not pika's
    error cascade and traceback; SIGTERM still stops it with 0."""
    env = streamer_env(
        redis_server.url,
        RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        BRIDGE_BACKOFF_BASE_MS="50",
        BRIDGE_BACKOFF_MAX_MS="200",
    )
    bridge = StreamerProcess(["bridge", "rabbitmq"], env, tmp_path / "bridge.log").start()
    try:
        wait_for(lambda: bridge.output().count("reconnecting in") >= 3, what="three retries")
        assert bridge.stop() == 0, bridge.output()
    finally:
        if bridge.running():
            bridge.kill()
    lines = bridge.output(100_000).strip().splitlines()
    retries = [line for line in lines if "reconnecting in" in line]
    assert all(" WARNING bridges.rabbitmq: " in line for line in retries)
    assert not [line for line in lines if "pika" in line or "Traceback" in line], lines


def test_publish_checks_payloads_against_max_payload_bytes() -> None:
    """`publish` refuses what the workers would dead-letter as too large: it reads the same
    MAX_PAYLOAD_BYTES (no hard-coded 64 KiB), before connecting."""
    data = json.dumps({"text": "x" * 200})
    args = ("publish", "--user", "u", "--type", "t", "--data", data)
    refused = streamer(*args, MAX_PAYLOAD_BYTES="100")
    assert refused.returncode == EXIT_BAD_INPUT
    assert "not a valid event (too_large)" in one_line(refused)
    accepted = streamer(*args, MAX_PAYLOAD_BYTES="100000")
    assert accepted.returncode == EXIT_FAILED  # valid: it got as far as the (absent) Redis
    assert "cannot reach Redis" in one_line(accepted)
