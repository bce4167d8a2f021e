"""`streamer dlq`: list, show, requeue and purge dead letters: those of every ingress
partition and of the compatibility stream (`notify:events:dlq`), as one list ordered by id.

A missing DLQ is the normal state of a healthy system: list, requeue --all/--reason and
purge report zero for it. An unknown id, a malformed id or time is bad input: one line on
stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import redis.asyncio as aioredis
import uvloop

from streamer.contract.ids import MAX_ID, MIN_ID, StreamId
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


async def _existing(redis: aioredis.Redis, keys: Keys) -> list[deadletters.DeadLetters]:
    """The DLQs that exist (the compatibility stream's, then the partitions'); a key of
    another type where a DLQ belongs is bad input."""
    streams = deadletters.dead_letter_streams(keys)
    pipe = redis.pipeline(transaction=False)
    for where in streams:
        pipe.type(where.dlq)
    found = []
    for where, kind in zip(streams, await pipe.execute(), strict=True):
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in ("none", "stream"):
            raise BadInput(f"{where.dlq} is a {kind}, not a stream")
        if kind == "stream":
            found.append(where)
    return found


def _names(keys: Keys, found: list[deadletters.DeadLetters]) -> str:
    if [w.dlq for w in found] in ([], [keys.dlq]):
        return keys.dlq
    return f"{len(found)} dead-letter streams"


async def list_entries(
    redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal
) -> int:
    if args.limit < 1:
        raise BadInput(f"--limit must be >= 1, got {args.limit}")
    found = await _existing(redis, keys)
    if not found:
        print(f"no dead letters ({keys.dlq} does not exist)", file=term.out)
        return 0
    entry_filter = EntryFilter(reason=args.reason)
    per_dlq = [await _first(redis, w.dlq, entry_filter, args.limit) for w in found]
    rows = list(heapq.merge(*per_dlq, key=lambda row: require_id(row[0])))[: args.limit]
    for entry_id, fields in rows:
        print(_row(entry_id, fields), file=term.out)
    pipe = redis.pipeline(transaction=False)
    for where in found:
        pipe.xlen(where.dlq)
    total = sum(await pipe.execute())
    which = f" with reason {args.reason}" if args.reason else ""
    print(f"{len(rows)} shown{which}; {total} dead letters in {_names(keys, found)}", file=term.out)
    return 0


async def _first(
    redis: aioredis.Redis, dlq: str, entry_filter: EntryFilter, limit: int
) -> list[deadletters.Entry]:
    """The oldest ``limit`` dead letters of one DLQ that the filter matches."""
    rows: list[deadletters.Entry] = []
    entries = source.pages(redis, dlq, MIN_ID, MAX_ID, 500)
    async with contextlib.aclosing(entries):
        async for page in entries:
            rows += [(eid, f) for eid, f in page if entry_filter.matches(f)][: limit - len(rows)]
            if len(rows) >= limit:
                break
    return rows


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
    located = await _locate(redis, keys, [entry_id])
    if not located:
        raise BadInput(f"no dead letter {entry_id} in {_names(keys, await _existing(redis, keys))}")
    ((_, (entry,)),) = located.items()
    print(f"{'id':<12} {describe(entry_id)}", file=term.out)
    for name, value in entry[1].items():
        print(f"{name.decode('utf-8', 'replace'):<12} {_value(name, value)}", file=term.out)
    return 0


async def _locate(
    redis: aioredis.Redis, keys: Keys, ids: list[StreamId]
) -> dict[deadletters.DeadLetters, list[deadletters.Entry]]:
    """The dead letters with these ids, grouped by the DLQ holding each (ids are unique
    across DLQs in practice: each is a time on some node's clock plus a sequence)."""
    found: dict[deadletters.DeadLetters, list[deadletters.Entry]] = {}
    for where in await _existing(redis, keys):
        entries = [e for e in await deadletters.fetch(redis, where.dlq, ids) if e is not None]
        if entries:
            found[where] = entries
    return found


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
    found = await _existing(redis, keys)
    for where in found:
        await source.check_appendable(redis, where.target)
    count = deadletters.RequeueCount(finished=True)
    targets: list[str] = []
    if ids:
        located = await _locate(redis, keys, ids)
        seen = {require_id(e[0]) for entries in located.values() for e in entries}
        unknown = [str(i) for i in ids if i not in seen]
        if unknown:
            raise BadInput(
                f"unknown dead-letter id(s) in {_names(keys, found)}: {', '.join(unknown)}"
            )
        for where, entries in located.items():
            _add(count, await deadletters.requeue(redis, where, entries))
            targets.append(where.target)
    else:
        entry_filter = EntryFilter(reason=args.reason)
        for where in found:
            part = await deadletters.requeue_matching(redis, where, entry_filter, term.stop)
            _add(count, part)
            if part.requeued:
                targets.append(where.target)
            if not part.finished:
                count.finished = False
                break
    distinct = sorted(set(targets)) or [keys.stream]
    into = distinct[0] if len(distinct) == 1 else f"{len(distinct)} ingress streams"
    gone = f" ({count.gone} already gone)" if count.gone else ""
    print(f"requeued {count.requeued} dead letters into {into}{gone}", file=term.out)
    if not count.finished:
        print("interrupted: run the same command again to requeue the rest", file=term.out)
        return 130
    return 0


def _add(total: deadletters.RequeueCount, part: deadletters.RequeueCount) -> None:
    total.requeued += part.requeued
    total.gone += part.gone


async def purge(redis: aioredis.Redis, keys: Keys, args: argparse.Namespace, term: Terminal) -> int:
    cutoff = parse_bound(args.before, end=False, now_ms=int(time.time() * 1000))
    found = await _existing(redis, keys)
    if not found:
        print(f"purged 0 dead letters ({keys.dlq} does not exist)", file=term.out)
        return 0
    limits: list[tuple[str, StreamId]] = []
    total = 0
    for where in found:
        counted = await deadletters.count_before(redis, where.dlq, cutoff)
        minid = deadletters.purge_limit(cutoff, counted)
        if minid is not None:
            limits.append((where.dlq, minid))
            total += counted.count
    if not limits:
        print(f"no dead letters before {describe(cutoff)}", file=term.out)
        return 0
    names = limits[0][0] if len(limits) == 1 else f"{len(limits)} dead-letter streams"
    question = f"delete {total} dead letters before {describe(cutoff)} from {names}? [y/N] "
    if not args.yes and not term.confirm(question):
        print("purge cancelled; nothing deleted", file=term.out)
        return 1
    deleted = 0
    for dlq, minid in limits:
        deleted += await deadletters.purge_before(redis, dlq, minid)
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
