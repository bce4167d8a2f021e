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
    write: Callable[[], list[bool]],
    *,
    backoff: Backoff,
    health: HealthTracker,
    stopping: threading.Event,
    grace_s: float,
    wait: Wait,
    holding: str,
) -> list[bool]:
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


def sleep_until_stopped(
    stopping: threading.Event, delay_s: float, give_up_at: float | None
) -> None:
    """A ``Wait`` without a broker to keep alive: until the delay passes or, while running,
    the bridge is stopped (the grace starts then); once stopping, never past the grace."""
    if give_up_at is None:
        stopping.wait(delay_s)
    else:
        time.sleep(max(0.0, min(delay_s, give_up_at - time.monotonic())))
