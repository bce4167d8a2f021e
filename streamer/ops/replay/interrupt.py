"""Ctrl-C for long operator commands: the first asks to stop after the batch in flight,
a second one cancels at once."""

from __future__ import annotations

import asyncio
import signal
from typing import TextIO


def stop_on_interrupt(stop: asyncio.Event, err: TextIO) -> None:
    """Route SIGINT/SIGTERM of the running loop to ``stop``; call from the main task."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()
            return
        stop.set()
        print("stopping after the batch in flight (again to abort)", file=err, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
