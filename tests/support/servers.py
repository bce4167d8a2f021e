"""Private redis-server processes on free ports. Tests never touch a Redis they did not start."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.support.polling import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        appendonly: bool = False,
        unixsocket: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.unixsocket = unixsocket  # also listen there (unix:// URLs)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server must be installed for the integration tests"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
                *(["--unixsocket", str(self.unixsocket)] if self.unixsocket else []),
                *self.extra_args(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self._ping(), timeout=10, what=f"redis-server on {self.port}")
        return self

    def extra_args(self) -> list[str]:
        """More redis-server options (a subclass's)."""
        return []

    def _ping(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.workdir / 'redis.log'}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 0.5) as c,
        ):
            c.sendall(b"PING\r\n")
            return c.recv(16).startswith(b"+PONG")
        return False

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a stalled host)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> RedisServer:
        """Stop (SIGTERM: with appendonly, the AOF is flushed) and start again on the same
        port and directory, with what it persisted."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server would never see TERM
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def streamer_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAM_", "ENABLE_"))
    }
    env.update({"REDIS_URL": redis_url, "METRICS_PORT": "0", "LOG_LEVEL": "info"})
    env.update(extra)
    return env
