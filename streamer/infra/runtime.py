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
    the youngest generation is collected every 5,000 allocations instead of 700 (measured:
    ~40 -> ~8 µs of collector time per push in the worker)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5000, 20, 20)


def run(main: Coroutine[Any, Any, None], log: LogSettings) -> int:
    setup_logging(log)
    tune_gc()
    uvloop.run(main)
    return 0
