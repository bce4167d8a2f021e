"""`streamer dlq`: list, show, requeue and purge dead letters (`notify:events:dlq`).

A missing DLQ is the normal state of a healthy system: list, requeue --all/--reason and
purge report zero for it. An unknown id, a malformed id or time is bad input: one line on
stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import redis.asyncio as aioredis
import uvloop

from streamer.contract.ids import MAX_ID, MIN_ID
from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from streamer.infra.settings import Env, RedisSettings
from streamer.ops.replay import deadletters, source
from streamer.ops.replay.entries import EntryFilter, Fields, summary
from streamer.ops.replay.ids import BadInput, describe, parse_bound, require_id
from streamer.ops.replay.interrupt import stop_on_interrupt

EXIT_BAD_INPUT = 2
_ERROR_WIDTH = 60


def _ask(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


@dataclass(slots=True)
class Terminal:
    """Where a dlq command prints, how it is interrupted and how it asks for confirmation."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    confirm: Callable[[str], bool] = _ask


Command = Callable[[aioredis.Redis, Keys, argparse.Namespace, Terminal], Awaitable[int]]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "dlq", help="inspect, requeue and purge dead letters"
    )
    actions = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="list dead letters, oldest first")
    ls.add_argument("--reason", help="only dead letters with this reason")
    ls.add_argument("--limit", type=int, default=50, help="show at most N (default 50)")
    show = actions.add_parser("show", help="print one dead letter in full")
    show.add_argument("id")
    requeue = actions.add_parser("requeue", help="move dead letters back to the ingress stream")
    requeue.add_argument("ids", nargs="*", metavar="ID")
    requeue.add_argument("--reason", help="every dead letter with this reason")
    requeue.add_argument("--all", action="store_true", help="every dead letter")
    purge = actions.add_parser("purge", help="delete dead letters older than a time")
    purge.add_argument("--before", required=True, help="epoch ms, ISO 8601, age (7d) or id")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=handle)


async def dlq_command(
    redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal
) -> int:
    """Run one `streamer dlq` action on ``redis``; returns the exit code."""
    commands: dict[str, Command] = {
        "list": list_entries, "show": show_entry, "requeue": requeue, "purge": purge,
    }  # fmt: skip
    try:
        return await commands[args.dlq_command](redis, keys, args, term)
    except BadInput as exc:
        print(f"streamer dlq: {exc}", file=term.err)
        return EXIT_BAD_INPUT


async def _dlq_exists(redis: aioredis.Redis, keys: Keys) -> bool:
    kind = await source.key_type(redis, keys.dlq)
    if kind not in ("none", "stream"):
        raise BadInput(f"{keys.dlq} is a {kind}, not a stream")
    return kind == "stream"


async def list_entries(
    redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal
) -> int:
    if args.limit < 1:
        raise BadInput(f"--limit must be >= 1, got {args.limit}")
    if not await _dlq_exists(redis, keys):
        print(f"no dead letters ({keys.dlq} does not exist)", file=term.out)
        return 0
    entry_filter, shown = EntryFilter(reason=args.reason), 0
    entries = source.pages(redis, keys.dlq, MIN_ID, MAX_ID, 500)
    async with contextlib.aclosing(entries):
        async for page in entries:
            for entry_id, fields in page:
                if shown < args.limit and entry_filter.matches(fields):
                    print(_row(entry_id, fields), file=term.out)
                    shown += 1
            if shown >= args.limit:
                break
    total = await redis.xlen(keys.dlq)
    which = f" with reason {args.reason}" if args.reason else ""
    print(f"{shown} shown{which}; {total} dead letters in {keys.dlq}", file=term.out)
    return 0


def _text(fields: Fields, name: bytes) -> str:
    return fields.get(name, b"-").decode("utf-8", "replace")


def _row(entry_id: bytes, fields: Fields) -> str:
    error = " ".join(_text(fields, b"error").split())
    if len(error) > _ERROR_WIDTH:
        error = error[: _ERROR_WIDTH - 1] + "…"
    return (
        f"{entry_id.decode():<16} {_text(fields, b'reason'):<16} "
        f"deliveries={_text(fields, b'deliveries'):<3} source={_text(fields, b'source_id'):<16} "
        f"{summary(fields)}  {error}"
    )


async def show_entry(
    redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal
) -> int:
    entry_id = require_id(args.id)
    (entry,) = await deadletters.fetch(redis, keys.dlq, [entry_id])
    if entry is None:
        raise BadInput(f"no dead letter {entry_id} in {keys.dlq}")
    print(f"{'id':<12} {describe(entry_id)}", file=term.out)
    for name, value in entry[1].items():
        print(f"{name.decode('utf-8', 'replace'):<12} {_value(name, value)}", file=term.out)
    return 0


def _value(name: bytes, value: bytes) -> str:
    if name == b"payload":
        try:
            return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        except ValueError:  # undecodable (that may be why it is here): show the bytes
            return repr(value)
    return value.decode("utf-8", "replace")


async def requeue(
    redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal
) -> int:
    modes = sum((bool(args.ids), args.reason is not None, args.all))
    if modes != 1:
        raise BadInput("requeue needs exactly one of: dead-letter ids, --reason R, --all")
    ids = list(dict.fromkeys(require_id(text) for text in args.ids))
    await source.check_appendable(redis, keys.stream)
    if ids:
        entries = await deadletters.fetch(redis, keys.dlq, ids)
        unknown = [str(i) for i, entry in zip(ids, entries, strict=True) if entry is None]
        if unknown:
            raise BadInput(f"unknown dead-letter id(s) in {keys.dlq}: {', '.join(unknown)}")
        count = await deadletters.requeue(redis, keys, [e for e in entries if e is not None])
    elif await _dlq_exists(redis, keys):
        entry_filter = EntryFilter(reason=args.reason)
        count = await deadletters.requeue_matching(redis, keys, entry_filter, term.stop)
    else:
        count = deadletters.RequeueCount(finished=True)
    gone = f" ({count.gone} already gone)" if count.gone else ""
    print(f"requeued {count.requeued} dead letters into {keys.stream}{gone}", file=term.out)
    if not count.finished:
        print("interrupted: run the same command again to requeue the rest", file=term.out)
        return 130
    return 0


async def purge(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal) -> int:
    cutoff = parse_bound(args.before, end=False, now_ms=int(time.time() * 1000))
    if not await _dlq_exists(redis, keys):
        print(f"purged 0 dead letters ({keys.dlq} does not exist)", file=term.out)
        return 0
    counted = await deadletters.count_before(redis, keys.dlq, cutoff)
    minid = deadletters.purge_limit(cutoff, counted)
    if minid is None:
        print(f"no dead letters before {describe(cutoff)}", file=term.out)
        return 0
    question = (
        f"delete {counted.count} dead letters before {describe(cutoff)} from {keys.dlq}? [y/N] "
    )
    if not args.yes and not term.confirm(question):
        print("purge cancelled; nothing deleted", file=term.out)
        return 1
    deleted = await deadletters.purge_before(redis, keys.dlq, minid)
    print(f"purged {deleted} dead letters before {describe(cutoff)}", file=term.out)
    return 0


def handle(args: argparse.Namespace) -> int:
    redis_settings = RedisSettings.from_env(Env())
    keys = Keys.from_settings(redis_settings)

    async def main() -> int:
        redis = connect(redis_settings.url, client_name="streamer-dlq")
        term = Terminal()
        stop_on_interrupt(term.stop, term.err)
        try:
            return await dlq_command(redis, keys, args, term)
        finally:
            await redis.aclose()

    try:
        return uvloop.run(main())
    except asyncio.CancelledError:
        return 130
