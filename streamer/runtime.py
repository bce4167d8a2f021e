"""Shared start-up for long-running processes: uvloop and logging."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import uvloop

from streamer.logs import setup_logging
from streamer.settings import LogSettings


def run(main: Coroutine[Any, Any, None], log: LogSettings) -> int:
    setup_logging(log)
    uvloop.run(main)
    return 0
