"""The one process runner of the suite: streamer commands as real child processes.

Each child writes its output to a log file; a failure message quotes the end of it, because
pytest's temporary directories rotate away before anyone reads them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.polling import wait_for

# No proxy from the environment may stand between a test and 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(HTTP status, body) from 127.0.0.1; status 0 while nothing listens yet."""
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


class StreamerProcess:
    """``python -m streamer ARGS`` (or any argv with ``command``) as a child process."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.argv = command if command is not None else [sys.executable, "-m", "streamer", *args]
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> StreamerProcess:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.popen is not None, "not started"
        return self.popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def kill(self) -> int:
        if self.running():
            self.process.kill()
        return self.process.wait()

    def output(self, tail: int | None = None) -> str:
        """What the process wrote, or its last ``tail`` characters."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def start_healthy(self, port: int) -> None:
        """Start, then wait until /healthz on ``port`` answers 200; killed if it never does.
        (Subclasses whose ``start`` calls this get the plain start here, not their own.)"""
        StreamerProcess.start(self)
        try:
            self.wait_healthy(port)
        except BaseException:
            self.kill()
            raise

    def wait_healthy(self, port: int, path: str = "/healthz", timeout: float = 20.0) -> None:
        """Until ``path`` on ``port`` answers 200; a child that exits first fails at once."""

        def healthy() -> bool:
            if not self.running():
                raise AssertionError(
                    f"{' '.join(self.argv[2:])} exited with {self.process.returncode}\n"
                    f"--- {self.log_path.name} ---\n{self.output(4000)}"
                )
            return http_get(port, path, timeout=1)[0] == 200

        try:
            wait_for(healthy, timeout=timeout, interval=0.05, what=f"{path} on port {port}")
        except AssertionError as exc:
            if "exited with" in str(exc):
                raise
            raise AssertionError(
                f"{exc}\n--- {self.log_path.name} ---\n{self.output(4000)}"
            ) from None


def start_streamer(args: list[str], env: dict[str, str], log_path: Path) -> StreamerProcess:
    return StreamerProcess(args, env, log_path).start()


def run_streamer(
    args: list[str], env: dict[str, str], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """``python -m streamer ARGS`` to completion (a one-shot command: status, dlq, publish)."""
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Where Debian's libfaketime puts the library (.ci/run installs it).
_FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def faketime_env(env: dict[str, str], offset_s: float) -> dict[str, str]:
    """``env`` for a process whose wall clock runs ``offset_s`` seconds off the host's
    (negative: behind), through libfaketime. Monotonic clocks are left alone: the skew
    under test is between hosts' wall clocks, not time running at another speed."""
    library = next((lib for lib in _FAKETIME_LIBS if Path(lib).exists()), None)
    assert library, "libfaketime is required (Debian: apt-get install faketime; .ci/run does)"
    return {
        **env,
        "LD_PRELOAD": library,
        "FAKETIME": f"{offset_s:+g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
