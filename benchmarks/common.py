"""Shared pieces of the benchmarks: a private redis-server, process CPU time, machine info."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import redis

from tests.support.servers import RedisServer

STREAM = "notify:events"


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


def load_events(client: redis.Redis, events: int, users: int) -> None:
    """XADD ``events`` websocket events round-robin over ``users``, pipelined."""
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        body = {
            "user_id": f"u{n % users}",
            "event_type": "ai_generation_progress",
            "data": {"n": n, "progress": n % 100, "job": f"job-{n // 100}"},
            "target_channels": ["websocket"],
        }
        pipe.xadd(STREAM, {"payload": json.dumps(body)})
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
