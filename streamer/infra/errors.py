"""The error tree of streamer, and where foreign exceptions are handled.

StreamerError
├── ConfigError      bad or missing configuration; raised at start-up, names the variable
├── StartupError     a process or the local stack cannot start for a reason outside its
│                    configuration (a port in use, redis-server exiting); one line for humans
├── RetryableError   a dependency failed in a way that may pass (Redis down, a timeout): the
│                    work stays un-acked and is tried again after a backoff
└── InvalidEvent     an event a producer hands to ``streamer.producer`` (or the HTTP API)
                     breaks the schema; nothing is written. Also a ValueError.

Foreign exceptions, each handled in one kind of place:
- Redis: ``streamer.infra.redis.REDIS_ERRORS`` (redis-py's errors, cluster errors, OSError)
  is caught at the boundary of each loop that retries (the worker's step, the gateway's
  inbox, heartbeat and ownership writers, the push markers), counted and backed off. The
  bridges map it to RetryableError once, in ``bridges.idempotent``, because their retry
  loop also spans the broker's library.
- Provider answers (APNs, FCM) are not exceptions: senders turn them into outcomes
  (``streamer.push.verdict``, each provider's ``outcome.py``), which the pure policy turns
  into ack, retry or dead letter.
- Bad input is not an exception either: decoding returns a Poison verdict with a reason,
  and the entry is dead-lettered with it. Only at a producer's edge, before anything is
  written, does it become InvalidEvent (the caller can fix it; nobody reads a DLQ for it).
- The producer (``streamer.producer``) maps Redis failures to RetryableError once, so its
  callers (the HTTP API) catch one class.
"""


class StreamerError(Exception):
    """Base of every error streamer raises on purpose."""


class ConfigError(StreamerError):
    """A setting is missing or invalid. The message names the environment variable."""


class StartupError(StreamerError):
    """Cannot start: the message says what happened and what to do, for an operator."""


class RetryableError(StreamerError):
    """A transient failure: the same work may succeed later."""


class InvalidEvent(StreamerError, ValueError):
    """An event breaks the schema: ``reason`` is the dead-letter reason the worker would give
    (``schema``, ``too_large``, ...), ``detail`` says what is wrong and names the field, and
    ``index`` is its place in a batch (None for a single event)."""

    def __init__(self, reason: str, detail: str, index: int | None = None) -> None:
        where = "" if index is None else f"event {index}: "
        super().__init__(f"{where}invalid event ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.index = index
