"""`streamer partition --user U | --topic T`: which ingress partition an event for a user
(or a topic) belongs to, and the stream a producer appends it to (XADD), in any language.

Pure: computed from KEY_PREFIX and INGRESS_PARTITIONS alone, as the workers compute it
(``Keys.ingress_for``); it never connects to Redis.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from streamer.ops.arguments import topic, user_id


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "partition", help="print the ingress partition and stream of a user or topic"
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=user_id, help="a user id")
    who.add_argument("--topic", type=topic, help="a topic name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=handle)


def describe(args: argparse.Namespace) -> dict[str, object]:
    """Partition index, count, stream and DLQ for the user or topic in ``args``."""
    from streamer.contract.event import NotificationPayload
    from streamer.contract.keys import Keys
    from streamer.infra.settings import Env, RedisSettings

    keys = Keys.from_settings(RedisSettings.from_env(Env()))
    if args.user is not None:
        event = NotificationPayload(user_id=args.user, event_type="-")
    else:
        event = NotificationPayload(topic=args.topic, event_type="-")
    stream = keys.ingress_for(event)
    part = next(p for p in keys.partitions if p.stream == stream)
    return {
        "user" if args.user is not None else "topic": args.user or args.topic,
        "partition": part.index,
        "partitions": keys.partition_count,
        "stream": part.stream,
        "dlq": part.dlq,
    }


def handle(args: argparse.Namespace) -> int:
    found = describe(args)
    if args.json:
        print(json.dumps(found))
        return 0
    who = f"user {args.user}" if args.user is not None else f"topic {args.topic}"
    print(f"{who}: partition {found['partition']} of {found['partitions']}")
    print(f"stream {found['stream']}")
    print(f"dlq    {found['dlq']}")
    return 0
