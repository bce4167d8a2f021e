"""`streamer publish`: XADD well-formed events, from flags or JSON lines on stdin.

It publishes through ``streamer.producer``: every payload is checked with the worker's own
decoder (and MAX_PAYLOAD_BYTES) before it is added, to its partition stream, in pipelined
batches. Flags that cannot make a valid event are bad input: one line, exit 2, nothing added.
Lines of --stdin that are invalid are reported one by one and skipped (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from streamer.contract.decode import decode_payload
from streamer.infra.errors import InvalidEvent
from streamer.infra.settings import Env
from streamer.ops.arguments import positive_int, user_id
from streamer.producer import Entry, Producer, ProducerSettings, prepare

_BATCH = 500
EXIT_BAD_INPUT = 2


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("publish", help="add events to the ingress stream")
    p.add_argument("--user", type=user_id, help="user id")
    p.add_argument("--type", dest="event_type", help="event type")
    p.add_argument("--data", default={}, type=json_object, help="event data as a JSON object")
    p.add_argument("--channels", default="websocket", help="comma-separated target channels")
    p.add_argument("--device-token")
    p.add_argument("--device-type")
    p.add_argument("--id", dest="event_id", help="producer idempotency key")
    p.add_argument("--count", type=positive_int, default=1, help="publish it N times (1)")
    p.add_argument("--stdin", action="store_true", help="read one JSON payload per line")
    p.set_defaults(handler=handle)


def json_object(text: str) -> dict[str, object]:
    """The --data argument type: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


class BadFlags(ValueError):
    """Flags that make no valid event."""


def payload_from_flags(args: argparse.Namespace, max_bytes: int) -> bytes:
    """The one payload the flags describe, checked as the worker would check it."""
    if not args.user or not args.event_type:
        raise BadFlags("--user and --type are required (or use --stdin)")
    payload: dict[str, object] = {
        "user_id": args.user,
        "event_type": args.event_type,
        "data": args.data,
        "target_channels": [c.strip() for c in args.channels.split(",") if c.strip()],
    }
    for key, value in (
        ("device_token", args.device_token),
        ("device_type", args.device_type),
        ("id", args.event_id),
    ):
        if value:
            payload[key] = value
    raw = json.dumps(payload).encode()
    verdict = decode_payload(raw, max_bytes)
    if isinstance(verdict, tuple):
        raise BadFlags(f"not a valid event ({verdict[0]}): {verdict[1]}")
    return raw


def _lines(stream: Iterable[str]) -> Iterator[bytes]:
    for line in stream:
        if line.strip():
            yield line.strip().encode()


async def publish(producer: Producer, payloads: Iterable[bytes]) -> tuple[int, int]:
    """Publish valid payloads in pipelined batches. Returns (published, rejected)."""
    published = rejected = 0
    batch: list[Entry] = []
    for number, raw in enumerate(payloads, 1):
        try:
            batch.append(prepare(raw, producer.keys, producer.max_payload_bytes))
        except InvalidEvent as exc:
            rejected += 1
            print(f"line {number}: rejected ({exc.reason}): {exc.detail}", file=sys.stderr)
            continue
        if len(batch) >= _BATCH:
            published += len(await producer.append(batch))
            batch = []
    published += len(await producer.append(batch))
    return published, rejected


def handle(args: argparse.Namespace) -> int:
    settings = ProducerSettings.from_env(Env())
    max_bytes = settings.max_payload_bytes
    if args.stdin:
        payloads: Iterable[bytes] = _lines(sys.stdin)
    else:
        try:
            payloads = [payload_from_flags(args, max_bytes)] * args.count
        except BadFlags as exc:
            print(f"streamer publish: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    async def main() -> tuple[int, int]:
        producer = Producer.from_settings(settings, client_name="streamer-publish")
        try:
            return await publish(producer, payloads)
        finally:
            await producer.aclose()

    published, rejected = asyncio.run(main())
    print(f"published {published} event(s) to their partition streams; rejected {rejected}")
    return 1 if rejected else 0
