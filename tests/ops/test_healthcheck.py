"""`streamer healthcheck`: which process kind PID 1 runs, where that kind serves its health
endpoint, and what the probe reports."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bridges.http import MetricsServer
from streamer.infra.settings import Env
from streamer.ops.healthcheck import ADDRESSES, HEALTH_PATH, health_url, kind_of, main, probe

SECRET = "healthcheck-tests-secret-0123456789abcdef"


def url_of(kind: str, **env: str) -> str:
    return health_url(ADDRESSES[kind](Env(env)))


@pytest.fixture
def health_server() -> Iterator[tuple[MetricsServer, list[tuple[bool, str]]]]:
    """The bridges' real /healthz server on a free port, answering what the test sets."""
    state = [(True, "ok\n")]
    server = MetricsServer("127.0.0.1", 0, lambda: state[0]).start()
    yield server, state
    server.close()


def test_kind_comes_from_the_command_line_forms_a_container_uses() -> None:
    """Console script, interpreter + script, `python -m`, an init in front, and bridges."""
    assert kind_of(["/opt/streamer/bin/python", "/opt/streamer/bin/streamer", "worker"]) == (
        "worker"
    )
    assert kind_of(["streamer", "gateway"]) == "gateway"
    assert kind_of(["python3", "-m", "streamer", "bridge", "pubsub"]) == "bridge pubsub"
    assert kind_of(["/sbin/docker-init", "--", "streamer", "bridge", "rabbitmq"]) == (
        "bridge rabbitmq"
    )


def test_commands_without_a_health_endpoint_have_no_kind() -> None:
    """One-shot commands, `streamer up`, an incomplete bridge and other programs: None."""
    for argv in (
        ["streamer", "status", "--json"],
        ["streamer", "up"],
        ["streamer", "bridge"],
        ["/bin/sh", "-c", "worker"],
        [],
    ):
        assert kind_of(argv) is None, argv


def test_each_kind_is_probed_on_the_port_its_settings_default_to() -> None:
    """Worker 9100, gateway 8765, RabbitMQ bridge 9102, Pub/Sub bridge 9103, publish API
    8780, on loopback."""
    assert url_of("worker") == f"http://127.0.0.1:9100{HEALTH_PATH}"
    assert url_of("gateway", JWT_SECRET=SECRET) == f"http://127.0.0.1:8765{HEALTH_PATH}"
    assert url_of("bridge rabbitmq") == f"http://127.0.0.1:9102{HEALTH_PATH}"
    assert url_of("bridge pubsub") == f"http://127.0.0.1:9103{HEALTH_PATH}"
    assert url_of("api") == f"http://127.0.0.1:8780{HEALTH_PATH}"  # no API_KEYS needed


def test_overridden_ports_and_hosts_are_followed() -> None:
    """METRICS_PORT/GATEWAY_PORT move the probe; a specific or IPv6 wildcard host is kept."""
    assert url_of("worker", METRICS_PORT="9200") == "http://127.0.0.1:9200/healthz"
    assert url_of("bridge pubsub", METRICS_HOST="10.0.0.5", METRICS_PORT="9300") == (
        "http://10.0.0.5:9300/healthz"
    )
    assert url_of("gateway", JWT_SECRET=SECRET, GATEWAY_HOST="::", GATEWAY_PORT="80") == (
        "http://[::1]:80/healthz"
    )
    assert url_of("api", API_HOST="0.0.0.0", API_PORT="9000") == "http://127.0.0.1:9000/healthz"


def test_probe_reports_200_as_healthy_and_anything_else_with_the_reason(
    health_server: tuple[MetricsServer, list[tuple[bool, str]]],
) -> None:
    """200 is healthy; a 503 carries its body; a closed port says why it failed."""
    server, state = health_server
    url = f"http://127.0.0.1:{server.port}{HEALTH_PATH}"
    assert probe(url) == (True, f"{url}: 200 ok")
    state[0] = (False, "unreachable: redis\n")
    assert probe(url) == (False, f"{url}: 503 unreachable: redis")
    healthy, detail = probe("http://127.0.0.1:1/healthz", timeout_s=2)
    assert not healthy and "refused" in detail.lower()


def test_the_command_probes_the_kind_the_given_process_runs(
    health_server: tuple[MetricsServer, list[tuple[bool, str]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """For a process whose command line is `… streamer worker`, METRICS_PORT is probed:
    exit 0 while healthy, 1 once /healthz says 503."""
    server, state = health_server
    monkeypatch.setenv("METRICS_PORT", str(server.port))
    monkeypatch.delenv("HEALTHCHECK_URL", raising=False)
    with process_running("streamer", "worker") as pid:
        assert main(["--pid", str(pid)]) == 0
        state[0] = (False, "unreachable: redis\n")
        assert main(["--pid", str(pid)]) == 1
    assert "503 unreachable: redis" in capsys.readouterr().out


def test_the_command_fails_for_other_processes_unless_given_a_url(
    health_server: tuple[MetricsServer, list[tuple[bool, str]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A process that is no streamer kind is unhealthy (exit 1, not Docker's reserved 2)
    and says so; HEALTHCHECK_URL, when set, is probed whatever the process."""
    server, _ = health_server
    monkeypatch.delenv("HEALTHCHECK_URL", raising=False)
    with process_running("streamer", "status") as pid:
        monkeypatch.setenv("HEALTHCHECK_PID", str(pid))
        assert main([]) == 1
        assert "not a streamer worker / gateway" in capsys.readouterr().out
        monkeypatch.setenv("HEALTHCHECK_URL", f"http://127.0.0.1:{server.port}/healthz")
        assert main([]) == 0


@contextlib.contextmanager
def process_running(*args: str) -> Iterator[int]:
    """The pid of a live process whose command line ends with ``args``."""
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"ready\n"  # it runs: its command line is set
            yield process.pid
        finally:
            process.communicate(timeout=10)
