"""Shared pieces of the benchmarks: a private redis-server, a worker + gateway stack, a load
process holding sockets, a raw publisher, process CPU time, machine info."""

from __future__ import annotations

import json
import os
import platform
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import hiredis
import redis

from tests.support.servers import RedisServer, free_port, streamer_env, wait_for

STREAM = "notify:events"
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def private_redis() -> RedisServer:
    return RedisServer(Path(tempfile.mkdtemp(prefix="streamer-bench-"))).start()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {platform.system()}"
    )


def load_events(
    client: redis.Redis,
    events: int,
    users: int,
    stream_of: Callable[[str], str] = lambda user: STREAM,
) -> None:
    """XADD ``events`` websocket events round-robin over ``users``, pipelined, each to
    ``stream_of(user id)`` (default: the compatibility stream)."""
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        user = f"u{n % users}"
        body = {
            "user_id": user,
            "event_type": "ai_generation_progress",
            "data": {"n": n, "progress": n % 100, "job": f"job-{n // 100}"},
            "target_channels": ["websocket"],
        }
        pipe.xadd(stream_of(user), {"payload": json.dumps(body)})
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace (or append) one benchmark's section of BENCHMARKS.md, from its ``## heading``
    to the next one, leaving the other sections as they are."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    start = current.find(heading)
    if start < 0:
        path.write_text(current.rstrip("\n") + "\n\n" + text)
        return
    end = current.find("\n## ", start + len(heading))
    tail = "" if end < 0 else current[end:]
    path.write_text(current[:start] + text.rstrip("\n") + "\n" + tail)


def histogram_buckets(port: int, name: str) -> dict[float, float]:
    """A Prometheus histogram's cumulative bucket counts (upper bound -> count), scraped
    from ``/metrics`` on ``port`` (label sets other than ``le`` summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, count = line[len(prefix) :].rsplit("} ", 1)
            le = next(
                p.split("=", 1)[1].strip('"') for p in labels.split(",") if p.startswith("le=")
            )
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(count)
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding the ``q`` quantile of what was observed between
    two scrapes (so "at most this"); NaN when nothing was."""
    delta = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return float("nan")
    return next(bound for bound, count in delta if count >= q * total)


def redis_cpu_seconds(client: redis.Redis) -> float:
    """redis-server's CPU time (user + system, every thread) from its own ``INFO cpu``."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class RawPublisher:
    """Writes commands to Redis as fast as one connection can carry them: RESP packed by
    hiredis, sent without waiting, replies read by a thread. The benchmarks' producer, not
    measured itself; an error reply stops the benchmark."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sent = 0
        self._replied = 0
        self._error: str | None = None
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, commands: list[tuple[str, ...]]) -> None:
        if self._error:
            raise RuntimeError(f"redis answered an error: {self._error}")
        self._sent += len(commands)
        self._sock.sendall(b"".join(hiredis.pack_command(c) for c in commands))

    def wait_replies(self, timeout_s: float = 120.0) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: self._replied >= self._sent or self._error, timeout_s
            ):
                raise RuntimeError(f"{self._sent - self._replied} replies missing")
        if self._error:
            raise RuntimeError(f"redis answered an error: {self._error}")

    def close(self) -> None:
        self._sock.close()

    def _read(self) -> None:
        reader = hiredis.Reader()
        while chunk := self._recv():
            reader.feed(chunk)
            count = 0
            while (reply := reader.gets()) is not False:
                count += 1
                if isinstance(reply, hiredis.ReplyError):
                    self._error = str(reply)
            with self._changed:
                self._replied += count
                self._changed.notify_all()

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(1 << 20)
        except OSError:
            return b""


class LoadProcess:
    """A benchmark's socket holder in a process of its own, driven over its stdin/stdout (one
    line per message): it prints ``ready`` once its sockets are open, progress lines while it
    runs, and a JSON report when it reads ``report``."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *argv],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def expect(self, prefix: str, timeout_s: float) -> str | None:
        """The next line starting with ``prefix`` (earlier lines are skipped), or None."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        return None

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def report(self) -> dict[str, Any]:
        self.tell("report")
        line = self.expect("{", 60)
        if line is None:
            raise RuntimeError("the load process did not report")
        result: dict[str, Any] = json.loads(line)
        return result


class Stack:
    """A private redis-server with one ``streamer worker`` and one ``streamer gateway`` (the
    real CLI) on it, and the load processes started against the gateway; all stopped on
    exit."""

    def __init__(self, secret: str, **settings: str) -> None:
        self.server = private_redis()
        self.redis_port = self.server.port
        self.client = redis.Redis.from_url(self.server.url)
        self.port = free_port()
        self.worker_metrics_port = free_port()
        self.secret = secret
        self.env = streamer_env(
            self.server.url,
            LOG_LEVEL="warning",
            JWT_SECRET=secret,
            WORKER_ID="bench",
            GATEWAY_ID="bench-gw",
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            **settings,
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.loads: list[LoadProcess] = []

    def __enter__(self) -> Stack:
        try:
            for name in ("worker", "gateway"):
                # The worker's /metrics on a port of its own (the gateway serves its own on
                # GATEWAY_PORT): the benchmarks read its latency histogram.
                env = {**self.env, "METRICS_PORT": str(self.worker_metrics_port)}
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "streamer", name],
                    env=env if name == "worker" else self.env,
                )
            wait_for(lambda: _healthy(self.port), timeout=30, what="gateway /healthz")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def load(self, argv: list[str]) -> LoadProcess:
        """Start ``python -m ARGV --load --port P`` with the stack's environment."""
        process = LoadProcess([*argv, "--load", "--port", str(self.port)], self.env)
        self.loads.append(process)
        return process

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        children: list[subprocess.Popen[Any]] = [
            *self.procs.values(),
            *(load.proc for load in self.loads),
        ]
        for proc in children:
            proc.terminate()
        for proc in children:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.client.close()
        self.server.stop()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
