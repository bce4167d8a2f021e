"""Shared start-up for long-running processes: uvloop and logging."""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from typing import Any

import uvloop

from streamer.infra.logs import setup_logging
from streamer.infra.settings import LogSettings


def tune_gc() -> None:
    """Fewer, cheaper collections for a process that allocates many short-lived objects per
    event: the objects of start-up (modules, settings) move out of the collector's way, and
    the youngest generation is collected every 50,000 allocations instead of 700. With a
    thousand pushes in flight, objects made before a collection and freed after it do not
    lower the count (it stops at 0), so at 5,000 a collection came every ~200 pushes and
    walked every live coroutine: ~40-50 µs of collector time per push, ~1-3 µs at 50,000
    (BENCHMARKS.md, "Push")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run(main: Coroutine[Any, Any, None], log: LogSettings) -> int:
    setup_logging(log)
    tune_gc()
    uvloop.run(main)
    return 0
