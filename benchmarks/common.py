"""Shared pieces of the benchmarks: a private redis-server, process CPU time, machine info."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

from tests.support.servers import RedisServer


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
