"""`streamer dlq`: list, show, requeue and purge dead letters, over every DLQ (each ingress
partition's, ``notify:{<tag>}:dlq``, and the compatibility stream's, ``notify:events:dlq``).

A dead letter is named by its handle, ``<dlq>/<id>`` (``p3/1733000000000-0``,
``compat/1733000000000-0``); a bare id is looked up in every DLQ and must be in exactly one.
Requeueing moves a dead letter back to the ingress stream of its own DLQ.

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
    show.add_argument("id", metavar="HANDLE", help="p<N>/ID, compat/ID, or an ID in one DLQ")
    requeue = actions.add_parser("requeue", help="move dead letters back to their ingress streams")
    requeue.add_argument("ids", nargs="*", metavar="HANDLE", help="p<N>/ID, compat/ID or ID")
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


async def list_entries(
    redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal
) -> int:
    if args.limit < 1:
        raise BadInput(f"--limit must be >= 1, got {args.limit}")
    found = await deadletters.existing(redis, deadletters.queues(keys))
    if not found:
        print("no dead letters (no DLQ exists)", file=term.out)
        return 0
    entry_filter, shown = EntryFilter(reason=args.reason), 0
    entries = deadletters.merged(redis, found)
    async with contextlib.aclosing(entries):
        async for queue, (entry_id, fields) in entries:
            if entry_filter.matches(fields):
                print(_row(queue.handle(entry_id), fields), file=term.out)
                shown += 1
                if shown >= args.limit:
                    break
    sizes = await deadletters.lengths(redis, found)
    for queue, size in zip(found, sizes, strict=True):
        if size:
            print(f"{queue.name:<7} {size:>8} in {queue.key}", file=term.out)
    which = f" with reason {args.reason}" if args.reason else ""
    print(f"{shown} shown{which}; {sum(sizes)} dead letters in all", file=term.out)
    return 0


def _text(fields: Fields, name: bytes) -> str:
    return fields.get(name, b"-").decode("utf-8", "replace")


def _row(handle: str, fields: Fields) -> str:
    error = " ".join(_text(fields, b"error").split())
    if len(error) > _ERROR_WIDTH:
        error = error[: _ERROR_WIDTH - 1] + "…"
    return (
        f"{handle:<24} {_text(fields, b'reason'):<16} "
        f"deliveries={_text(fields, b'deliveries'):<3} source={_text(fields, b'source_id'):<16} "
        f"{summary(fields)}  {error}"
    )


async def show_entry(
    redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal
) -> int:
    ((queue, (entry_id, fields)),) = await deadletters.locate(
        redis, deadletters.queues(keys), [args.id]
    )
    print(f"{'id':<12} {describe(require_id(entry_id))}", file=term.out)
    print(f"{'handle':<12} {queue.handle(entry_id)}", file=term.out)
    print(f"{'dlq':<12} {queue.key}", file=term.out)
    for name, value in fields.items():
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
    all_queues = deadletters.queues(keys)
    for stream in dict.fromkeys(q.stream for q in all_queues):
        await source.check_appendable(redis, stream)
    if args.ids:
        counts = await _requeue_located(
            redis, await deadletters.locate(redis, all_queues, args.ids)
        )
    else:
        entry_filter = EntryFilter(reason=args.reason)
        counts = await deadletters.requeue_everywhere(redis, all_queues, entry_filter, term.stop)
    _report_requeue(all_queues, counts, term.out)
    if not all(c.finished for c in counts.values()):
        print("interrupted: run the same command again to requeue the rest", file=term.out)
        return 130
    return 0


async def _requeue_located(
    redis: aioredis.Redis, located: list[tuple[deadletters.DeadLetterQueue, deadletters.Entry]]
) -> dict[str, deadletters.RequeueCount]:
    by_queue: dict[deadletters.DeadLetterQueue, list[deadletters.Entry]] = {}
    for queue, entry in located:
        by_queue.setdefault(queue, []).append(entry)
    return {q.name: await deadletters.requeue(redis, q, e) for q, e in by_queue.items()}


def _report_requeue(
    all_queues: tuple[deadletters.DeadLetterQueue, ...],
    counts: dict[str, deadletters.RequeueCount],
    out: TextIO,
) -> None:
    requeued = sum(c.requeued for c in counts.values())
    gone = sum(c.gone for c in counts.values())
    note = f" ({gone} already gone)" if gone else ""
    print(f"requeued {requeued} dead letters{note}", file=out)
    for queue in all_queues:
        count = counts.get(queue.name)
        if count is not None and count.requeued:
            print(f"{queue.name:<7} {count.requeued:>8} into {queue.stream}", file=out)


async def purge(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal) -> int:
    cutoff = parse_bound(args.before, end=False, now_ms=int(time.time() * 1000))
    found = await deadletters.existing(redis, deadletters.queues(keys))
    counted = [await deadletters.count_before(redis, q.key, cutoff) for q in found]
    limits = [deadletters.purge_limit(cutoff, c) for c in counted]
    targets = [(q, minid) for q, minid in zip(found, limits, strict=True) if minid is not None]
    if not targets:
        print(f"no dead letters before {describe(cutoff)}", file=term.out)
        return 0
    total = sum(c.count for c in counted)
    question = (
        f"delete {total} dead letters before {describe(cutoff)} from {len(targets)} DLQ(s)? [y/N] "
    )
    if not args.yes and not term.confirm(question):
        print("purge cancelled; nothing deleted", file=term.out)
        return 1
    deleted = [await deadletters.purge_before(redis, q.key, minid) for q, minid in targets]
    print(f"purged {sum(deleted)} dead letters before {describe(cutoff)}", file=term.out)
    for (queue, _), n in zip(targets, deleted, strict=True):
        print(f"{queue.name:<7} {n:>8} from {queue.key}", file=term.out)
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
