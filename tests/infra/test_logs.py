"""Logging: LOG_FORMAT=text|json, one line per record, and no secrets or full tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from streamer.infra.logs import mask_token, redact, setup_logging
from streamer.infra.settings import LogSettings

APNS_TOKEN = "ab12" * 16
FCM_TOKEN = "dQw4w9WgXcQ:APA91b" + "Zx_9-" * 30
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1NDIifQ.c2lnbmF0dXJlLWJ5dGVz"
SECRETS = ("hunter2", "s3cr3t", JWT, APNS_TOKEN, FCM_TOKEN, "opaque-bearer-value")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging reconfigures the root logger; put it back after each test."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    chatty = {n: logging.getLogger(n).level for n in ("websockets", "pika", "asyncio")}
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in chatty.items():
        logging.getLogger(name).setLevel(level)


def leaky_message() -> str:
    return (
        f"connect redis://:hunter2@redis:6379/0 and amqp://streamer:s3cr3t@rabbit/ "
        f"token {JWT} header Bearer opaque-bearer-value ws /ws/u1?token=abc.def&x=1 "
        f"apns {APNS_TOKEN} fcm {FCM_TOKEN}"
    )


def test_redact_removes_credentials_and_masks_device_tokens() -> None:
    """URL passwords, JWTs, bearer and query tokens vanish; device tokens keep a prefix."""
    text = redact(leaky_message())
    assert not [s for s in SECRETS if s in text]
    assert "redis://:***@redis:6379/0" in text and "amqp://streamer:***@rabbit/" in text
    assert "?token=***&x=1" in text
    assert mask_token(APNS_TOKEN) in text and mask_token(FCM_TOKEN) in text
    assert mask_token(APNS_TOKEN) == "ab12ab…(64)"
    assert redact("user u42 event 1700000000000-0 on notify:events") == (
        "user u42 event 1700000000000-0 on notify:events"
    )


def test_json_lines_carry_fields_and_no_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=json: each record one JSON object with extras and the exception inline."""
    setup_logging(LogSettings(level="info", format="json"))
    log = logging.getLogger("streamer.test")
    log.info("delivered %d events", 3, extra={"channel": "websocket"})
    try:
        raise ConnectionError(leaky_message())
    except ConnectionError:
        log.exception("redis unavailable")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "delivered 3 events" and first["channel"] == "websocket"
    assert first["level"] == "info" and first["logger"] == "streamer.test"
    assert first["ts"].endswith("Z")
    assert "ConnectionError" in second["exc"]
    assert not [s for s in SECRETS if s in lines[1]]


def test_text_lines_are_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=text redacts the message and the traceback."""
    setup_logging(LogSettings(level="info", format="text"))
    logging.getLogger("streamer.test").warning("retrying %s", leaky_message())
    err = capsys.readouterr().err
    assert " WARNING streamer.test: retrying connect redis://:***@" in err
    assert not [s for s in SECRETS if s in err]


def test_chatty_libraries_only_log_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    """Per-connection INFO lines of websockets/pika are dropped unless LOG_LEVEL=debug."""
    setup_logging(LogSettings(level="info", format="text"))
    logging.getLogger("websockets.server").info("connection open")
    logging.getLogger("pika.channel").warning("channel closed by broker")
    err = capsys.readouterr().err
    assert "connection open" not in err and "channel closed by broker" in err
    setup_logging(LogSettings(level="debug", format="text"))
    logging.getLogger("websockets.server").info("connection open")
    assert "connection open" in capsys.readouterr().err
