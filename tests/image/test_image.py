"""The container image from the outside: its processes start as the unprivileged user,
connect, deliver, pass the image's own HEALTHCHECK on the port each kind serves and stop on
SIGTERM with status 0; the image holds no compilers, test files or secrets, and the
dependency versions the tests ran with."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from redis import Redis as SyncRedis

from streamer.infra.settings import Env
from streamer.ops.healthcheck import ADDRESSES
from tests.support.containers import Container, ContainerProcess, image_config
from tests.support.events import KEYS, add_events, payload
from tests.support.gateway import SECRET, open_socket, receive
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_for
from tests.support.rabbit import RABBITMQ_URL, channel, delete_queues, unique_queue, wait_quiet
from tests.support.servers import RedisServer, free_port

pytestmark = pytest.mark.image

UNPRIVILEGED_UID = 10001
KINDS = tuple(ADDRESSES)  # worker, gateway, bridge rabbitmq, bridge pubsub, api
PORT_VARIABLE = {"gateway": "GATEWAY_PORT", "api": "API_PORT"}  # the others: METRICS_PORT
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "cpp", "make", "ld", "as")
# A PEM private key: the armour line, then base64 (not a docstring's "<key bytes>").
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40}")

Containers = Callable[[dict[str, str]], Container]


@pytest.fixture(scope="module")
def config(image: str) -> dict[str, Any]:
    return image_config(image)


@pytest.fixture
def containers(image: str, tmp_path: Path) -> Iterator[Containers]:
    """Working containers of the image with a given environment, removed (and whatever
    they still run killed) at the end of the test."""
    made: list[Container] = []

    def make(env: dict[str, str]) -> Container:
        made.append(Container(image, tmp_path, env))
        return made[-1]

    yield make
    for container in made:
        container.remove()


def entrypoint(config: dict[str, Any], *args: str) -> list[str]:
    return [*config["Entrypoint"], *args]


def start(container: Container, config: dict[str, Any], kind: str) -> ContainerProcess:
    process = container.start(entrypoint(config, *kind.split()))
    assert process.uid() == UNPRIVILEGED_UID, process.output()
    return process


def healthcheck(
    container: Container, config: dict[str, Any], process: ContainerProcess
) -> tuple[int, str, float]:
    """Run the image's HEALTHCHECK command as Docker would (in the container, with its
    environment): exit status, output, seconds taken."""
    check = config["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    began = time.monotonic()
    # buildah gives no PID namespace: tell the check which process plays PID 1.
    result = container.run(check[1:], env={"HEALTHCHECK_PID": str(process.main_pid)})
    return result.returncode, (result.stdout + result.stderr).strip(), time.monotonic() - began


def stop(process: ContainerProcess) -> None:
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0, process.output()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def serving_port(kind: str, env: dict[str, str]) -> tuple[int, dict[str, str]]:
    """The port ``kind`` is to serve, and the setting that makes it so: none when its
    default is free (other processes share this machine's ports), else a free port."""
    default = ADDRESSES[kind](Env(env))[1]
    if port_is_free(default):
        return default, {}
    port = free_port()
    return port, {PORT_VARIABLE.get(kind, "METRICS_PORT"): str(port)}


def kind_env(kind: str, redis_url: str) -> dict[str, str]:
    unique = uuid.uuid4().hex[:10]
    extra = {
        "worker": {"WORKER_ID": f"image-{unique}", "BLOCK_MS": "200"},
        "gateway": {"JWT_SECRET": SECRET, "GATEWAY_ID": f"image-{unique}"},
        "bridge rabbitmq": {
            "RABBITMQ_URL": RABBITMQ_URL,
            "RABBITMQ_QUEUE_NAME_AI_UPDATES": unique_queue("image_smoke"),
        },
        "bridge pubsub": {"REDIS_PUBSUB_CHANNEL_NAME": f"image_smoke_{unique}"},
        "api": {"API_KEYS": f"image-smoke-{unique}"},
    }[kind]
    return {"REDIS_URL": redis_url, "LOG_LEVEL": "info", **extra}


def connected(kind: str, env: dict[str, str], client: SyncRedis) -> bool:
    """Whether a process of ``kind`` has reached its broker: it heartbeats in Redis as a
    worker or gateway, consumes its queue, subscribes its channel, or (the HTTP API) holds a
    connection to Redis."""
    if kind == "worker":
        return client.zscore(KEYS.workers, env["WORKER_ID"]) is not None
    if kind == "gateway":
        return client.zscore(KEYS.gateways, env["GATEWAY_ID"]) is not None
    if kind == "bridge rabbitmq":
        return wait_quiet(lambda: consumers(env["RABBITMQ_QUEUE_NAME_AI_UPDATES"]) > 0)
    if kind == "api":  # its Redis client is connected (it pings Redis for /readyz)
        return any(c.get("name") == "streamer-api" for c in client.client_list())
    [(_, subscribers)] = client.pubsub_numsub(env["REDIS_PUBSUB_CHANNEL_NAME"])
    return bool(subscribers)


def consumers(queue: str) -> int:
    with channel() as ch:  # a passive declare fails until the bridge has declared the queue
        return int(ch.queue_declare(queue, passive=True).method.consumer_count)


def test_image_runs_as_the_unprivileged_user(
    config: dict[str, Any], containers: Containers
) -> None:
    """USER is 10001 (a named account), so `docker run` never starts a process as root."""
    assert config["User"] == f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}"
    result = containers({}).run(["id"])
    assert result.stdout.startswith(f"uid={UNPRIVILEGED_UID}(streamer) gid={UNPRIVILEGED_UID}(")


def test_version_is_the_package_version(config: dict[str, Any], containers: Containers) -> None:
    """`streamer --version` in the image prints the version of the package under test."""
    result = containers({}).run(entrypoint(config, "--version"))
    assert (result.returncode, result.stdout) == (0, f"streamer {metadata.version('streamer')}\n")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_healthy_on_the_port_it_serves_and_stops_on_sigterm(
    kind: str,
    config: dict[str, Any],
    containers: Containers,
    redis_server: RedisServer,
    sync_redis: SyncRedis,
) -> None:
    """Started from the image, the process reaches its broker; the image's HEALTHCHECK
    passes, probing the port this process listens on (its kind's default when free), within
    the check's timeout; SIGTERM stops it with status 0."""
    env = kind_env(kind, redis_server.url)
    port, port_env = serving_port(kind, env)
    container = containers({**env, **port_env})
    try:
        process = start(container, config, kind)
        process.wait_healthy(port)
        wait_for(lambda: connected(kind, env, sync_redis), timeout=30, what=f"{kind} connected")
        status, output, seconds = healthcheck(container, config, process)
        assert status == 0, output
        assert output == f"http://127.0.0.1:{port}/healthz: 200 ok"
        assert port in process.listening_ports()
        assert seconds < config["Healthcheck"]["Timeout"] / 1e9, output
        stop(process)
    finally:
        if kind == "bridge rabbitmq":
            delete_queues(env["RABBITMQ_QUEUE_NAME_AI_UPDATES"])


async def test_worker_and_gateway_from_the_image_deliver_an_event_to_a_websocket(
    config: dict[str, Any],
    containers: Containers,
    redis: aioredis.Redis,
    redis_server: RedisServer,
) -> None:
    """An event added to the ingress stream reaches a WebSocket client of the gateway,
    through a worker and a gateway both running from the image; both then stop cleanly."""
    port = free_port()
    gateway_container = containers(
        {**kind_env("gateway", redis_server.url), "GATEWAY_PORT": str(port)}
    )
    worker_container = containers({**kind_env("worker", redis_server.url), "METRICS_PORT": "0"})
    gateway = await asyncio.to_thread(start, gateway_container, config, "gateway")
    worker = await asyncio.to_thread(start, worker_container, config, "worker")
    await asyncio.to_thread(gateway.wait_healthy, port)
    conn = await open_socket(port, "image-user")
    await add_events(redis, [payload("image-user", 42)])
    [frame] = await receive(conn, 1, within_s=15)
    assert (frame["type"], frame["content"]) == ("test", {"n": 42})
    await conn.close()
    for process in (worker, gateway):
        await asyncio.to_thread(stop, process)


def test_image_holds_no_compilers_test_files_or_secrets(
    config: dict[str, Any], containers: Containers
) -> None:
    """No compiler or C headers, no test code or development tools, no pip configuration
    of the build machine, no private keys or credentials in files or the environment."""
    with containers({}).mounted() as root:
        site = only(root.glob("opt/streamer/lib/python3*/site-packages"))
        bins = [root / d.lstrip("/") for d in env_of(config)["PATH"].split(":")]
        assert not [f"{d}/{c}" for d in bins for c in COMPILERS if (d / c).exists()]
        assert not (root / "usr/include/stdio.h").exists(), "C library headers"
        assert not [p for p in site.iterdir() if p.name in ("tests", "test", "conftest.py")]
        assert not list((root / "opt/streamer").rglob("conftest.py"))
        assert not (root / "src").exists(), "the build stage's source copy"
        installed = {canonicalize_name(d.metadata["Name"]) for d in distributions(site)}
        assert not installed & dev_tools()
        leftovers = ["etc/pip.conf", "etc/xdg/pip", "root/.config/pip", "opt/pypi", "opt/wheels"]
        assert not [p for p in leftovers if (root / p).exists()], "build machine's pip setup"
        assert not [p for p in ("root/.netrc", "root/.git-credentials") if (root / p).exists()]
        assert not files_with_private_keys(root)
    for variable in env_of(config):
        assert not any(word in variable for word in ("SECRET", "PASSWORD", "TOKEN")), variable


def test_image_has_the_dependency_versions_the_tests_ran_with(containers: Containers) -> None:
    """Every dependency pinned in constraints.txt is in the image at that version, and
    nothing the tests ran with is in the image unpinned."""
    pins = dict(
        line.split("==")
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    with containers({}).mounted() as root:
        site = only(root.glob("opt/streamer/lib/python3*/site-packages"))
        installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions(site)}
    assert {name: installed.get(name) for name in pins} == pins
    # Beyond the pins, the image may hold what only its Python needs (redis wants
    # async-timeout below Python 3.11.3; the local Debian base has 3.11.2).
    tested = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()}
    unpinned = installed.keys() - pins.keys() - {"pip", "setuptools", "streamer"}
    assert not unpinned & tested


def only(paths: Iterator[Path]) -> Path:
    [path] = list(paths)
    return path


def env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config["Env"])


def distributions(site: Path) -> list[metadata.Distribution]:
    return list(metadata.distributions(path=[str(site)]))


def dev_tools() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}


def files_with_private_keys(root: Path) -> list[Path]:
    """Files outside the system's own directories holding a PEM private key."""
    tops = ("etc", "opt", "root", "home", "srv", "tmp", "var")
    files = (p for top in tops for p in (root / top).rglob("*") if p.is_file())
    small = (p for p in files if not p.is_symlink() and p.stat().st_size < 1 << 20)
    return [p for p in small if PRIVATE_KEY.search(p.read_bytes())]
