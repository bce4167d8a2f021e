"""Run a container image's processes with buildah, on a machine without a Docker daemon.

`buildah run --isolation chroot --network host` shares the host's PID and network
namespaces: the image's process is an ordinary host process (below the `buildah run`
process), it reaches test servers on 127.0.0.1, and a second `buildah run` in the same
working container is what `docker exec` would be. Without a PID namespace the process is not
PID 1, so health checks are told its pid (HEALTHCHECK_PID).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess

BUILDAH = shutil.which("buildah") or "buildah"
RUN = (BUILDAH, "run", "--isolation", "chroot", "--network", "host")
CHROOT_EXEC = "buildah-chroot-exec"  # buildah's last process before the image's own
LISTEN = "0A"  # TCP state in /proc/net/tcp*


def buildah(*args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [BUILDAH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def image_config(image: str) -> dict[str, Any]:
    """The image's Docker-format configuration (Entrypoint, Cmd, User, Healthcheck, …)."""
    inspected = json.loads(buildah("inspect", "--type", "image", image))
    config: dict[str, Any] = inspected["Docker"]["config"]
    return config


def image_size(image: str) -> str:
    return buildah("images", "--format", "{{.Size}}", image).strip()


def _env_args(env: Mapping[str, str]) -> list[str]:
    return [arg for name, value in env.items() for arg in ("--env", f"{name}={value}")]


class Container:
    """A working container of ``image`` with ``env`` added to the image's environment (like
    `docker create --env`): every process run in it sees that environment."""

    def __init__(self, image: str, logs: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = f"streamer-smoke-{uuid.uuid4().hex[:10]}"
        self.logs = logs
        self.processes: list[ContainerProcess] = []
        buildah("from", "--pull=never", "--name", self.name, image)
        if env:
            buildah("config", *_env_args(env), self.name)

    def start(self, args: Sequence[str]) -> ContainerProcess:
        """Run ``args`` (the image's entrypoint is not applied) in the background."""
        log_path = self.logs / f"{self.name}-{'-'.join(args[-2:])}.log"
        self.processes.append(ContainerProcess(self.name, args, log_path).start())
        return self.processes[-1]

    def run(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` to completion in this container, like `docker exec`."""
        command = [*RUN, *_env_args(env or {}), self.name, "--", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    @contextlib.contextmanager
    def mounted(self) -> Iterator[Path]:
        """The container's root filesystem, read from the host."""
        root = Path(buildah("mount", self.name).strip())
        try:
            yield root
        finally:
            buildah("umount", self.name)

    def remove(self) -> None:
        """Kill what still runs in the container, then delete it."""
        for process in self.processes:
            process.kill()
        buildah("rm", self.name)


class ContainerProcess(StreamerProcess):
    """A process of the image: the child is its `buildah run` (whose exit status is the
    process's); ``main_pid`` is the image's process itself, which signals go to, as Docker
    signals a container's PID 1."""

    def __init__(self, container: str, args: Sequence[str], log_path: Path) -> None:
        # buildah itself runs in the host's environment; the container has its own.
        command = [*RUN, container, "--", *args]
        super().__init__([], dict(os.environ), log_path, command=command)
        self.main_pid = 0

    def start(self) -> ContainerProcess:
        super().start()
        self.main_pid = wait_for(self._find_main, timeout=30, what=f"{self.log_path.name}")
        return self

    def _find_main(self) -> int | None:
        if not self.running():
            raise AssertionError(f"exited {self.process.returncode}: {self.output()}")
        # buildah run -> buildah-chroot-runtime -> buildah-chroot-exec -> the image's process,
        # beside short-lived helpers (chrootuser-open reads the image's /etc/passwd).
        for pid, argv in _descendants(self.pid):
            if argv[:1] == [CHROOT_EXEC]:
                for child in _children(pid):
                    child_argv = _cmdline(child)
                    if child_argv and child_argv[0] != CHROOT_EXEC:  # exec'd
                        return child
        return None

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.main_pid, sig)

    def kill(self) -> int:
        if self.running() and self.main_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.main_pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                return self.wait(30)
        return super().kill()

    def uid(self) -> int:
        status = Path(f"/proc/{self.main_pid}/status").read_text()
        line = next(row for row in status.splitlines() if row.startswith("Uid:"))
        return int(line.split()[1])

    def listening_ports(self) -> set[int]:
        """TCP ports the image's process listens on (host network: /proc/net is the host's)."""
        inodes = set()
        with contextlib.suppress(FileNotFoundError):
            for fd in os.listdir(f"/proc/{self.main_pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{self.main_pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        ports = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == LISTEN and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports


def _descendants(pid: int) -> Iterator[tuple[int, list[str]]]:
    for child in _children(pid):
        yield child, _cmdline(child)
        yield from _descendants(child)


def _children(pid: int) -> list[int]:
    # Every thread's list: Go programs such as buildah fork from any of their threads.
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return sorted(children)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
