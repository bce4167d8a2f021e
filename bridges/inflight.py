"""One batch written in a background thread while the broker's thread keeps consuming.

pika is driven from one thread, and a Redis round trip for a batch (the script calls run
~10 µs a message inside Redis) used to leave it idle: no frames parsed, no heartbeats but
through ``connection.sleep``. With the write in a worker thread, the broker's thread parses
the next batch meanwhile (the GIL is released while the worker waits on its socket) and
keeps servicing the connection through Redis outages. One batch at a time, in order: the
writer's progress records rely on batches being written one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C")


class InFlight(Generic[C, T]):
    """At most one job at a time, with a ``context`` the caller settles it with."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._job: Future[T] | None = None
        self._context: C | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def finished(self) -> bool:
        """A job was started and has ended (``take`` will not block)."""
        return self._job is not None and self._job.done()

    def start(self, context: C, job: Callable[[], T], on_end: Callable[[], None]) -> None:
        """Run ``job`` in the worker thread; ``on_end`` is called there when it ends, to wake
        the caller's loop."""
        assert self._job is None, "one job at a time"
        self._context = context
        self._job = self._executor.submit(job)
        self._job.add_done_callback(lambda _: on_end())

    def take(self) -> tuple[C, T]:
        """Wait for the job; its context and result (or what it raised). Frees the slot."""
        assert self._job is not None and self._context is not None
        job, context = self._job, self._context
        self._job = self._context = None
        return context, job.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
