"""The processes behind the demo page: a worker and a gateway on a private redis-server."""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import redis as syncredis

from tests.support.events import KEYS
from tests.support.processes import start_streamer, stop
from tests.support.servers import free_port, streamer_env, wait_for

# Minted per test session and never written to disk: no secret lives in the repository.
JWT_SECRET = secrets.token_urlsafe(48)


def mint(user_id: str, ttl_s: float) -> str:
    """An HS256 token the gateway accepts, valid for ttl_s seconds."""
    exp = int(time.time() + ttl_s)
    return jwt.encode({"sub": user_id, "exp": exp}, JWT_SECRET, algorithm="HS256")


class Gateway:
    """`streamer gateway` as a subprocess that can be stopped and started on the same port."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.env = streamer_env(
            redis_url,
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            GATEWAY_ID=f"browser-gw-{self.port}",
            JWT_SECRET=JWT_SECRET,
            DEMO_MODE="1",
            GATEWAY_BLOCK_MS="200",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        self.starts += 1
        log = self.workdir / f"gateway-{self.starts}.log"
        self.process = start_streamer(["gateway"], self.env, log)
        try:
            wait_for(self._healthy, timeout=20, interval=0.05, what="gateway healthz")
        except AssertionError as exc:
            # pytest's temp dirs rotate quickly; keep the gateway's own words in the failure.
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{exc}\n--- {log.name} ---\n{tail}") from None
        return self

    def stop(self) -> int:
        assert self.process is not None
        return stop(self.process)

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited with {self.process.returncode}")
        return healthy(self.port)


def healthy(port: int) -> bool:
    """True when a gateway on this port answers /healthz with 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def publish(client: syncredis.Redis, user_id: str, event_type: str, data: dict[str, Any]) -> str:
    """XADD one event in the contract's form, as a producer would."""
    body = {"user_id": user_id, "event_type": event_type, "data": data}
    entry_id = client.xadd(KEYS.stream, {"payload": json.dumps(body)})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def user_log_ids(client: syncredis.Redis, user_id: str) -> list[str]:
    entries: list[tuple[bytes, Any]] = client.xrange(KEYS.user_log(user_id))  # type: ignore[assignment]
    return [entry_id.decode() for entry_id, _ in entries]


def has_socket_owner(client: syncredis.Redis, user_id: str) -> bool:
    """True once some gateway has recorded a socket of this user (live delivery reaches it)."""
    return bool(client.hlen(KEYS.owners(user_id)))


class Publisher(threading.Thread):
    """Publishes events n = 1..count for one user at a steady pace, bounded in count and time."""

    def __init__(self, redis_url: str, user_id: str, count: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.redis_url = redis_url
        self.user_id = user_id
        self.count = count
        self.interval_s = interval_s
        self.published = 0
        self.error: BaseException | None = None
        self._halted = threading.Event()

    def run(self) -> None:
        client = syncredis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + self.count * self.interval_s + 30
        try:
            for n in range(1, self.count + 1):
                if self._halted.is_set() or time.monotonic() > deadline:
                    return
                publish(client, self.user_id, "test", {"n": n})
                self.published = n
                # Pacing the load, not waiting for anything: Event.wait returns early on halt().
                self._halted.wait(self.interval_s)
        except BaseException as exc:  # surfaced by finish(), so the test fails loudly
            self.error = exc
        finally:
            client.close()

    def halt(self) -> None:
        self._halted.set()

    def finish(self, timeout: float = 30) -> None:
        self.join(timeout)
        assert not self.is_alive(), "publisher did not finish"
        if self.error is not None:
            raise self.error


def stop_quietly(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        with contextlib.suppress(OSError):
            stop(process)
