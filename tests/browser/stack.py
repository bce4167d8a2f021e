"""The processes behind the demo page: a worker and a gateway on a private redis-server."""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import redis as syncredis

from tests.support.events import KEYS
from tests.support.gateway import GatewayProcess
from tests.support.processes import StreamerProcess
from tests.support.servers import free_port

# Minted per test session and never written to disk: no secret lives in the repository.
JWT_SECRET = secrets.token_urlsafe(48)


def mint(user_id: str, ttl_s: float) -> str:
    """An HS256 token the gateway accepts, valid for ttl_s seconds."""
    exp = int(time.time() + ttl_s)
    return jwt.encode({"sub": user_id, "exp": exp}, JWT_SECRET, algorithm="HS256")


class Gateway(GatewayProcess):
    """The demo page's gateway: DEMO_MODE on, this session's secret."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        port_hint = free_port()
        super().__init__(
            redis_url,
            f"browser-gw-{port_hint}",
            workdir,
            secret=JWT_SECRET,
            DEMO_MODE="1",
            GATEWAY_BLOCK_MS="200",
            WS_RESUME_WAIT_MS="300",
            WS_CLOSE_TIMEOUT_S="5",
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


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


def stop_quietly(process: StreamerProcess | None) -> None:
    if process is not None and process.popen is not None:
        with contextlib.suppress(OSError):
            process.stop()
