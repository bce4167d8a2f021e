"""The child processes of `streamer up`: started, their output passed on, health-checked.

Each child's output (stdout and stderr) goes to ours, every line prefixed with the child's
name, and its last lines are kept, so that a child that dies can be explained in the one
error `streamer up` prints.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO

KEPT_LINES = 20
# No proxy from the environment may stand between `streamer up` and its own children.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None = None  # answers 200 once the child is ready


class Child:
    """One running child process."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self._lines: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> Child:
        self._process = subprocess.Popen(
            self.spec.argv,
            env=self.spec.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self._process.stdout is not None
        self._pump = threading.Thread(
            target=self._pass_on, args=(self._process.stdout,), name=self.name, daemon=True
        )
        self._pump.start()
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def _pass_on(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._lines.append(line)
            with contextlib.suppress(OSError, ValueError):
                print(f"{self.name:<10}| {line}", flush=True)

    def exit_code(self) -> int | None:
        """None while it runs."""
        return None if self._process is None else self._process.poll()

    def healthy(self) -> bool:
        if self.spec.health_url is None:
            return self.exit_code() is None
        try:
            with _OPENER.open(self.spec.health_url, timeout=1) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def last_lines(self) -> str:
        if self._pump is not None:
            self._pump.join(2)  # the output of a child that exited is all there
        return "\n".join(f"  {line}" for line in self._lines) or "  (no output)"

    def terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> None:
        if self._process is None:
            return
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print(f"{self.name} did not stop in {timeout_s:.0f}s; killing it", file=sys.stderr)
            self._process.kill()
            self._process.wait()


def stop_all(children: list[Child], timeout_s: float = 15.0) -> None:
    """SIGTERM every child, then wait for each (SIGKILL after ``timeout_s``)."""
    for child in children:
        child.terminate()
    for child in children:
        child.wait(timeout_s)
