"""Logging set-up: LOG_FORMAT=text|json, one line per event that matters.

Every line passes through ``redact`` on its way out, so a URL password, a JWT, a bearer
token or a full device token never reaches the logs even when an exception message
carries one. Code that logs a device token on purpose should still pass it through
``mask_token`` so the line stays useful (a recognisable prefix) after redaction.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from streamer.infra.settings import LogSettings

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

# Libraries that log every connection or channel event at INFO; their lines are kept only
# at LOG_LEVEL=debug so that a busy gateway or bridge logs what matters, not each socket.
_CHATTY = ("websockets", "pika", "asyncio")

_MASK_PREFIX = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host (redis, amqp, http)
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"']*):[^@\s\"']+@"), r"\1:***@"),
    # JWTs: header.payload.signature, base64url, the header always starts with eyJ
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<jwt>"),
    (re.compile(r"(?i)(bearer[ .])[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"(?i)([?&](?:access_)?token=)[^&\s\"']+"), r"\1***"),
)
# APNs device tokens are 64 hex digits; FCM registration tokens are long base64url strings
# with a colon. Both keep a short prefix so that support can still match them.
_DEVICE_TOKENS = re.compile(r"\b[0-9a-fA-F]{64}\b|\b[A-Za-z0-9_-]{11,}:[A-Za-z0-9_-]{60,}")


def mask_token(token: str) -> str:
    """A device token as it may appear in logs: a short prefix and the length."""
    return f"{token[:_MASK_PREFIX]}…({len(token)})"


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _DEVICE_TOKENS.sub(lambda m: mask_token(m.group(0)), text)


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any `extra` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    quiet = logging.DEBUG if settings.level == "debug" else logging.WARNING
    for name in _CHATTY:
        logging.getLogger(name).setLevel(quiet)
