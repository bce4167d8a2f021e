"""The error tree of streamer, and where foreign exceptions are handled.

StreamerError
├── ConfigError      bad or missing configuration; raised at start-up, names the variable
├── StartupError     a process or the local stack cannot start for a reason outside its
│                    configuration (a port in use, redis-server exiting); one line for humans
└── RetryableError   a dependency failed in a way that may pass (Redis down, a timeout): the
                     work stays un-acked and is tried again after a backoff

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
  and the entry is dead-lettered with it.
"""


class StreamerError(Exception):
    """Base of every error streamer raises on purpose."""


class ConfigError(StreamerError):
    """A setting is missing or invalid. The message names the environment variable."""


class StartupError(StreamerError):
    """Cannot start: the message says what happened and what to do, for an operator."""


class RetryableError(StreamerError):
    """A transient failure: the same work may succeed later."""
