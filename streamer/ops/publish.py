"""`streamer publish`: XADD well-formed events, from flags or JSON lines on stdin."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import redis.asyncio as aioredis

from streamer.contract.decode import decode_payload
from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from streamer.infra.settings import Env, RedisSettings

_BATCH = 500
_MAX_BYTES = 65536


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("publish", help="add events to the ingress stream")
    p.add_argument("--user", help="user id")
    p.add_argument("--type", dest="event_type", help="event type")
    p.add_argument("--data", default="{}", help="event data as a JSON object")
    p.add_argument("--channels", default="websocket", help="comma-separated target channels")
    p.add_argument("--device-token")
    p.add_argument("--device-type")
    p.add_argument("--id", dest="event_id", help="producer idempotency key")
    p.add_argument("--count", type=int, default=1, help="publish the event this many times")
    p.add_argument("--stdin", action="store_true", help="read one JSON payload per line")
    p.set_defaults(handler=handle)


def payload_from_flags(args: argparse.Namespace) -> bytes:
    if not args.user or not args.event_type:
        raise SystemExit("streamer publish: --user and --type are required (or use --stdin)")
    payload: dict[str, object] = {
        "user_id": args.user,
        "event_type": args.event_type,
        "data": json.loads(args.data),
        "target_channels": [c.strip() for c in args.channels.split(",") if c.strip()],
    }
    for key, value in (
        ("device_token", args.device_token),
        ("device_type", args.device_type),
        ("id", args.event_id),
    ):
        if value:
            payload[key] = value
    return json.dumps(payload).encode()


def _lines(stream: Iterable[str]) -> Iterator[bytes]:
    for line in stream:
        if line.strip():
            yield line.strip().encode()


async def publish(redis: aioredis.Redis, stream: str, payloads: Iterable[bytes]) -> tuple[int, int]:
    """XADD valid payloads in pipelined batches. Returns (published, rejected)."""
    published = rejected = 0
    pipe = redis.pipeline(transaction=False)
    for number, raw in enumerate(payloads, 1):
        verdict = decode_payload(raw, _MAX_BYTES)
        if isinstance(verdict, tuple):
            rejected += 1
            print(f"line {number}: rejected ({verdict[0]}): {verdict[1]}", file=sys.stderr)
            continue
        pipe.xadd(stream, {"payload": raw})
        published += 1
        if len(pipe) >= _BATCH:
            await pipe.execute()
    if len(pipe):
        await pipe.execute()
    return published, rejected


def handle(args: argparse.Namespace) -> int:
    keys = Keys.from_settings(RedisSettings.from_env(Env()))
    if args.stdin:
        payloads: Iterable[bytes] = _lines(sys.stdin)
    else:
        payloads = [payload_from_flags(args)] * args.count

    async def main() -> tuple[int, int]:
        redis = connect(RedisSettings.from_env(Env()).url, client_name="streamer-publish")
        try:
            return await publish(redis, keys.stream, payloads)
        finally:
            await redis.aclose()

    published, rejected = asyncio.run(main())
    print(f"published {published} event(s) to {keys.stream}; rejected {rejected}")
    return 1 if rejected else 0
