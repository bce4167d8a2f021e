"""The error tree of streamer.

StreamerError
├── ConfigError          bad or missing configuration; raised at start-up, names the variable
├── RetryableError       transient: leave the stream entry pending, retry later
└── PermanentError       will never succeed as is: dead-letter (or feedback) and ack

Foreign exceptions (redis, pika, HTTP/2) are mapped to these once, at the adapter
boundary, with ``raise ... from exc``.
"""


class StreamerError(Exception):
    """Base of every error streamer raises on purpose."""


class ConfigError(StreamerError):
    """A setting is missing or invalid. The message names the environment variable."""


class RetryableError(StreamerError):
    """A transient failure: the same work may succeed later."""


class PermanentError(StreamerError):
    """A failure that retrying cannot fix."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
