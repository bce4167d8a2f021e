"""The processes of one chaos scenario, and what the scenario learns from them.

A Stack owns a private redis-server and every `streamer` process the scenario starts
(workers, gateways, bridges). A process that exits without the scenario having stopped or
killed it is a *crash*; ``crashes()`` names each with the end of its log. At the end every
process is stopped and every queue the scenario declared is deleted.

Scenarios observe the system as an operator would: ``streamer status --json`` for lag and
pending entries, ``streamer dlq list`` for dead letters, sockets for deliveries; never the
key layout, which is changing (partitioned ingress).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from streamer.infra.settings import Env, RedisSettings
from streamer.ops.status import Thresholds, collect, to_json
from tests.support.gateway import GatewayProcess
from tests.support.load import Figures
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess, faketime_env, run_streamer
from tests.support.servers import RedisServer, streamer_env

# Short timings so a fault and its recovery fit in seconds: a gateway silent for 3 s is
# dead to the workers, claims of a dead worker's entries after 1.5 s.
TIMINGS = {
    "GATEWAY_HEARTBEAT_MS": "500",
    "GATEWAY_DEAD_AFTER_MS": "3000",
    "BLOCK_MS": "200",
    "CLAIM_IDLE_MS": "1500",
    "RETRY_BASE_MS": "100",
    "READ_COUNT": "200",
    "BRIDGE_BACKOFF_BASE_MS": "50",
    "BRIDGE_BACKOFF_MAX_MS": "1000",
    "LOG_LEVEL": "info",
}

P = TypeVar("P", bound=StreamerProcess)

# `streamer status`'s default liveness window; lag and DLQ limits do not matter here.
_THRESHOLDS = Thresholds(max_lag=1 << 62, max_dlq=1 << 62, live_ms=15000)
_DLQ_ROW = re.compile(r"^(\S+/\d+-\d+)\s+(\S+)\s+deliveries=\S*\s+source=(\S+)")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # its handle: <dlq>/<id>, as `streamer dlq list` prints it
    reason: str
    source_id: str


async def _status(env: dict[str, str]) -> dict[str, Any]:
    settings = RedisSettings.from_env(Env(env))
    redis = connect(settings.url, client_name="chaos-status")
    try:
        report = await collect(redis, Keys.from_settings(settings), _THRESHOLDS)
    finally:
        await redis.aclose()
    decoded: dict[str, Any] = json.loads(to_json(report))
    return decoded


def _clock(env: dict[str, str], offset_s: float) -> dict[str, str]:
    return faketime_env(env, offset_s) if offset_s else env


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir / "redis")
        self._processes: list[tuple[str, StreamerProcess]] = []
        self._intended: set[int] = set()  # pids the scenario stopped or killed itself
        self._cleanups: list[Callable[[], None]] = []
        self.figures: Figures | None = None
        self.notes: list[str] = []  # what the table shows beside the figures
        self.problems: list[str] = []  # what went wrong that the figures do not count

    # --- starting -------------------------------------------------------------------------

    def start_redis(self, *, appendonly: bool = False) -> RedisServer:
        """(Re)start this stack's redis-server, empty; call before starting processes."""
        self.redis.stop()
        self.redis = RedisServer(self.workdir / "redis", appendonly=appendonly).start()
        return self.redis

    def other_redis(self, name: str) -> RedisServer:
        """One more private redis-server (e.g. a Pub/Sub source), stopped at the end."""
        server = RedisServer(self.workdir / name).start()
        self.on_close(server.stop)
        return server

    def env(self, redis_url: str | None = None, **extra: str) -> dict[str, str]:
        return streamer_env(redis_url or self.redis.url, **{**TIMINGS, **extra})

    def worker(
        self,
        name: str,
        *,
        redis_url: str | None = None,
        clock_offset_s: float = 0,
        **extra: str,
    ) -> StreamerProcess:
        """A worker process with id ``name``, its wall clock ``clock_offset_s`` off."""
        env = _clock(self.env(redis_url, WORKER_ID=name, **extra), clock_offset_s)
        return self._track(name, StreamerProcess(["worker"], env, self._log(name)).start())

    def gateway(
        self,
        name: str,
        *,
        redis_url: str | None = None,
        start: bool = True,
        clock_offset_s: float = 0,
        **extra: str,
    ) -> GatewayProcess:
        """A gateway process with id ``name``, its wall clock ``clock_offset_s`` off;
        healthy when this returns, unless ``start`` is False (then the scenario starts it
        and judges the outcome)."""
        settings = {**TIMINGS, **extra}
        gateway = GatewayProcess(redis_url or self.redis.url, name, self.workdir, **settings)
        gateway.env = _clock(gateway.env, clock_offset_s)
        self._track(name, gateway)
        return gateway.start() if start else gateway

    def bridge(self, kind: str, name: str, *, env: dict[str, str] | None = None) -> StreamerProcess:
        """``streamer bridge rabbitmq|pubsub`` with ``env`` (default: this stack's)."""
        process = StreamerProcess(["bridge", kind], env or self.env(), self._log(name))
        return self._track(name, process.start())

    def on_close(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def _track(self, name: str, process: P) -> P:
        self._processes.append((name, process))
        return process

    def _log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # --- faults ---------------------------------------------------------------------------

    def kill(self, process: StreamerProcess) -> None:
        """SIGKILL, as the scenario's fault (not a crash)."""
        self._intended.add(process.pid)
        process.kill()

    def stop(self, process: StreamerProcess) -> int:
        """SIGTERM and wait; the exit code."""
        self._intended.add(process.pid)
        return process.stop()

    def pause(self, process: StreamerProcess) -> None:
        process.signal(signal.SIGSTOP)

    def resume(self, process: StreamerProcess) -> None:
        process.signal(signal.SIGCONT)

    def may_exit(self, process: StreamerProcess) -> None:
        """This process exiting is an outcome the scenario judges itself, not a crash."""
        if process.popen is not None:
            self._intended.add(process.pid)

    def crashes(self) -> list[str]:
        """Processes that exited although the scenario never stopped them, with their logs."""
        found = []
        for name, process in self._processes:
            popen = process.popen
            if popen is None or popen.poll() is None or popen.pid in self._intended:
                continue
            found.append(f"{name} exited with {popen.returncode}:\n{process.output(1500)}")
        return found

    # --- observing ------------------------------------------------------------------------

    def command(self, *args: str, env: dict[str, str] | None = None) -> str:
        """A one-shot `streamer` command against this stack; its stdout (must exit 0 or 1)."""
        result = run_streamer(list(args), env or self.env())
        assert result.returncode in (0, 1), f"streamer {' '.join(args)}: {result.stderr}"
        return result.stdout

    def status(self, *, clock_offset_s: float = 0) -> dict[str, Any]:
        """What `streamer status --json` reports. With a clock offset it is that command, run
        with its wall clock off; else the command's own code in this process, because
        starting the command costs seconds (it imports every process kind's libraries)
        and scenarios poll it."""
        if clock_offset_s:
            env = _clock(self.env(), clock_offset_s)
            report: dict[str, Any] = json.loads(self.command("status", "--json", env=env))
            return report
        return asyncio.run(_status(self.env()))

    def settled(self, within_s: float = 30.0) -> None:
        """Until every stream entry was read and acked: nothing left to deliver."""

        def idle() -> bool:
            stream = self.status().get("stream") or {}
            return stream.get("lag") == 0 and stream.get("pending") == 0

        wait_for(idle, timeout=within_s, interval=0.2, what="no lag and nothing pending")

    def dead_letters(self) -> list[DeadLetter]:
        out = self.command("dlq", "list", "--limit", "1000000")
        rows = (_DLQ_ROW.match(line) for line in out.splitlines())
        return [DeadLetter(*row.groups()) for row in rows if row]

    # --- the end --------------------------------------------------------------------------

    def close(self) -> None:
        """SIGTERM to every process at once (paused ones are continued first, or they would
        not see it), then wait for each; SIGKILL after 5 s."""
        running = [process for _, process in self._processes if process.running()]
        for process in running:
            with contextlib.suppress(OSError):
                process.signal(signal.SIGCONT)
                process.signal(signal.SIGTERM)
        for process in running:
            process.stop(timeout=5)
        self.redis.stop()
        for cleanup in self._cleanups:
            cleanup()
