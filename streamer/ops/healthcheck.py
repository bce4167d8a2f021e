"""`streamer healthcheck`: the container's HEALTHCHECK.

It probes the health endpoint of the process the container runs, on the port that process
kind really serves: the kind comes from PID 1's command line (the container's main process;
with `docker run --init` the init's command line names it too), the address from the same
settings reader that process used, so defaults and overrides (METRICS_PORT, GATEWAY_PORT,
METRICS_HOST, GATEWAY_HOST, API_PORT, API_HOST) agree. HEALTHCHECK_URL, when set, is probed as is.

Exit status follows Docker: 0 healthy, 1 unhealthy, with one line saying why on stdout
(Docker keeps it in the health log). The image runs it as ``python -m
streamer.ops.healthcheck``: importing only one settings module keeps a probe at a fraction
of the CPU of the full CLI, which imports every process kind.
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env

# The endpoint every process kind serves; one place to change when /livez arrives.
HEALTH_PATH = "/healthz"
# Below the Dockerfile's HEALTHCHECK --timeout (5 s), so a hung endpoint reports a reason.
TIMEOUT_S = 4.0

Address = tuple[str, int]


def _worker(env: Env) -> Address:
    from streamer.worker.settings import WorkerSettings

    metrics = WorkerSettings.from_env(env).metrics
    return metrics.host, metrics.port


def _gateway(env: Env) -> Address:
    from streamer.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env(env)
    return settings.host, settings.port


def _bridge_rabbitmq(env: Env) -> Address:
    from bridges.settings import RabbitSettings

    metrics = RabbitSettings.from_env(env).common.metrics
    return metrics.host, metrics.port


def _bridge_pubsub(env: Env) -> Address:
    from bridges.settings import PubSubSettings

    metrics = PubSubSettings.from_env(env).common.metrics
    return metrics.host, metrics.port


def _api(env: Env) -> Address:
    from streamer.api.settings import address

    return address(env)


# Process kind (its `streamer` subcommand) -> where it serves HEALTH_PATH.
ADDRESSES: dict[str, Callable[[Env], Address]] = {
    "worker": _worker,
    "gateway": _gateway,
    "api": _api,
    "bridge rabbitmq": _bridge_rabbitmq,
    "bridge pubsub": _bridge_pubsub,
}


def kind_of(argv: Sequence[str]) -> str | None:
    """The process kind a command line runs (a key of ADDRESSES), or None. Accepts
    `streamer worker`, `/opt/streamer/bin/python /opt/streamer/bin/streamer worker` (how the
    kernel runs a console script), `python -m streamer worker` and `docker-init -- streamer
    bridge pubsub`."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) != "streamer":
            continue
        rest = list(argv[i + 1 :])
        for kind in ADDRESSES:
            words = kind.split()
            if rest[: len(words)] == words:
                return kind
    return None


def command_line(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        raw = handle.read()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def health_url(address: Address) -> str:
    """The URL to probe a server bound to ``address``; a wildcard bind is probed on loopback."""
    host, port = address
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{HEALTH_PATH}"


def probe(url: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, one line saying what was found). Healthy means HTTP 200."""
    # The endpoint is local: an HTTP(S)_PROXY in the environment must not reroute it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return response.status == 200, f"{url}: {response.status} {_first_line(response)}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {_first_line(exc)}"
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        return False, f"{url}: {exc}"


def _first_line(response: Any) -> str:
    """The start of a response body, for the health log."""
    text = bytes(response.read(200)).decode(errors="replace").strip()
    return text.splitlines()[0] if text else ""


def target(env: Env, pid: int) -> str:
    """The URL to probe for the process ``pid``. Raises ConfigError when there is none."""
    url = env.optional("HEALTHCHECK_URL")
    if url is not None:
        return url
    try:
        argv = command_line(pid)
    except OSError as exc:
        raise ConfigError(f"HEALTHCHECK_PID: cannot read the command line of {pid}: {exc}") from exc
    kind = kind_of(argv)
    if kind is None:
        raise ConfigError(
            f"HEALTHCHECK_URL: process {pid} runs {' '.join(argv)!r}, not a streamer "
            f"{' / '.join(ADDRESSES)}; set HEALTHCHECK_URL to probe it"
        )
    address = ADDRESSES[kind](env)
    if address[1] == 0:
        raise ConfigError(f"{kind}: its health endpoint is off (port 0); set HEALTHCHECK_URL")
    return health_url(address)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pid",
        type=int,
        default=None,
        help="the process whose kind to check (default: HEALTHCHECK_PID, else 1, the "
        "container's main process)",
    )
    parser.set_defaults(handler=handle)


def register(sub: Any) -> None:
    add_arguments(
        sub.add_parser("healthcheck", help="probe this container's process (HEALTHCHECK)")
    )


def handle(args: argparse.Namespace) -> int:
    env = Env()
    try:
        pid = args.pid if args.pid is not None else env.int("HEALTHCHECK_PID", 1, minimum=1)
        healthy, detail = probe(target(env, pid))
    except ConfigError as exc:
        # Exit 2 is reserved by Docker's HEALTHCHECK: a check that cannot run is unhealthy.
        healthy, detail = False, f"healthcheck: {exc}"
    print(detail)
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer healthcheck", description=__doc__)
    add_arguments(parser)
    return handle(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
