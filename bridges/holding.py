"""Hold on to a received batch until Redis takes it: shared by both bridges.

While running, a batch is retried forever with capped backoff (nothing received is dropped);
once the bridge is stopping, for at most the shutdown grace, then the last error is raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bridges.core import Backoff
from streamer.infra.errors import RetryableError
from streamer.infra.http import HealthTracker

log = logging.getLogger(__name__)

# (delay in seconds, the moment the grace runs out or None): how a bridge waits between tries
# (pika's connection.sleep keeps heartbeats going; Pub/Sub waits on its stop event).
Wait = Callable[[float, float | None], None]


def write_until_taken(
    write: Callable[[], list[str | None]],
    *,
    backoff: Backoff,
    health: HealthTracker,
    stopping: threading.Event,
    grace_s: float,
    wait: Wait,
    holding: str,
) -> list[str | None]:
    """Call ``write`` until it succeeds. ``holding`` says what waits, for the log line."""
    give_up_at: float | None = None
    while True:
        try:
            results = write()
        except RetryableError as exc:
            health.failed("redis")
            if stopping.is_set():
                give_up_at = give_up_at or time.monotonic() + grace_s
                if time.monotonic() >= give_up_at:
                    raise
            delay = backoff.next_s()
            log.warning("redis unavailable (%s); %s, retrying in %.2fs", exc, holding, delay)
            wait(delay, give_up_at)
            continue
        health.ok("redis")
        return results
