"""`streamer replay`: append a range of the ingress streams (every partition's and the
compatibility stream) or of the dead-letter streams again, each entry into its own ingress
stream, so the workers process those entries a second time. One --from/--to range covers
every stream, and an interrupted replay resumes from one bound for all of them."""

from __future__ import annotations

import argparse
import asyncio
import math
import shlex
import sys
import time
from typing import Any, TextIO

import redis.asyncio as aioredis
import uvloop

from streamer.contract.ids import StreamId
from streamer.contract.keys import Keys
from streamer.infra.redis import REDIS_ERRORS, connect
from streamer.infra.settings import Env, RedisSettings
from streamer.ops.replay import runner
from streamer.ops.replay.entries import EntryFilter, summary
from streamer.ops.replay.ids import BadInput, describe, format_bound, parse_range
from streamer.ops.replay.interrupt import stop_on_interrupt
from streamer.ops.replay.runner import Lane, ReplayPlan, ReplayState

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
_DEFAULT_BATCH = 1000


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="append a stream range again for the workers to reprocess",
        description=__doc__,
    )
    bound = "a stream id, epoch ms, ISO 8601 time or age (15m, 2h, 7d)"
    p.add_argument("--from", dest="start", required=True, metavar="START", help=f"- or {bound}")
    p.add_argument("--to", dest="end", required=True, metavar="END", help=f"+ or {bound}")
    p.add_argument(
        "--source",
        default="events",
        help="events (default: every ingress stream) or dlq (every DLQ)",
    )
    p.add_argument("--user", help="only events of this user (reads only its partition)")
    p.add_argument("--event-type", help="only events of this type")
    p.add_argument("--channel", help="only events targeting this channel")
    p.add_argument("--dry-run", action="store_true", help="count and show matches; write nothing")
    p.add_argument("--rate", type=float, help="write at most N entries per second")
    p.add_argument("--batch", type=int, default=_DEFAULT_BATCH, help="entries per read and write")
    p.set_defaults(handler=handle)


def lanes(name: str, keys: Keys, user: str | None) -> tuple[Lane, ...]:
    """The streams a replay reads, each with the stream it appends to. ``events``: every
    partition's stream and the compatibility stream, each into itself (with ``--user``,
    only that user's partition); ``dlq``: every DLQ into its ingress stream (with ``--user``,
    that user's partition's and the compatibility one's)."""
    parts = keys.partitions if user is None else (keys.of_user(user),)
    if name in ("events", keys.stream):
        found = [Lane(f"p{p.index}", p.stream, p.stream) for p in parts]
        return tuple(
            found if user is not None else [*found, Lane("compat", keys.stream, keys.stream)]
        )
    if name in ("dlq", keys.dlq):
        found = [Lane(f"p{p.index}", p.dlq, p.stream) for p in parts]
        return (*found, Lane("compat", keys.dlq, keys.stream))
    raise BadInput(f"unknown source {name!r} (events or dlq)")


def plan_from_args(args: argparse.Namespace, keys: Keys, now_ms: int) -> ReplayPlan:
    """Validate the command line into a plan. Pure; raises BadInput."""
    start, end = parse_range(args.start, args.end, now_ms)
    if args.rate is not None and not (math.isfinite(args.rate) and args.rate > 0):
        raise BadInput(f"--rate must be a finite number > 0, got {args.rate}")
    if not 1 <= args.batch <= 10_000:
        raise BadInput(f"--batch must be between 1 and 10000, got {args.batch}")
    chosen = lanes(args.source, keys, args.user)
    from_dlq = chosen[0].source != chosen[0].target
    # Without --user every stream is read, so a copy a worker forwarded to another
    # partition is skipped: the replay of its origin forwards it again. With --user only
    # the user's partition is read, and each of its events is there exactly once.
    originals_only = not from_dlq and args.user is None
    entry_filter = EntryFilter(
        user=args.user, event_type=args.event_type, channel=args.channel,
        originals_only=originals_only,
    )  # fmt: skip
    return ReplayPlan(
        lanes=chosen,
        start=start,
        end=end,
        filter=entry_filter,
        from_dlq=from_dlq,
        dry_run=args.dry_run,
        batch=args.batch,
        rate=args.rate,
    )


def resume_command(args: argparse.Namespace, resume: StreamId, end: StreamId) -> str:
    """The command line that continues an interrupted replay where it stopped."""
    words = ["streamer", "replay", "--from", format_bound(resume), "--to", format_bound(end)]
    options = (
        ("--source", args.source), ("--user", args.user), ("--event-type", args.event_type),
        ("--channel", args.channel), ("--rate", args.rate),
        ("--batch", None if args.batch == _DEFAULT_BATCH else args.batch),
    )  # fmt: skip
    for flag, value in options:
        if value is not None:
            words += [flag, str(value)]
    if args.dry_run:
        words.append("--dry-run")
    return shlex.join(words)


async def replay_command(
    redis: aioredis.Redis,
    keys: Keys,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    stop: asyncio.Event,
) -> int:
    """Run `streamer replay` on ``redis``; returns the exit code."""
    try:
        plan = plan_from_args(args, keys, int(time.time() * 1000))
        plan, estimate = await runner.freeze(redis, plan)
    except BadInput as exc:
        print(f"streamer replay: {exc}", file=err)
        return EXIT_BAD_INPUT
    print(
        f"replay: {_streams(plan)} from {describe(plan.start)} to {describe(plan.end)}"
        f", each into {'its ingress stream' if plan.from_dlq else 'itself'}"
        f"{' (dry run)' if plan.dry_run else ''}",
        file=err,
    )
    from streamer.ops.replay.progress import progress_output  # rich: only when replaying

    state, started = ReplayState(), time.monotonic()
    progress = progress_output(err, estimate, "matched" if plan.dry_run else "written")
    try:
        await runner.run(redis, plan, state, progress, stop)
    except asyncio.CancelledError:
        progress.close()
        print(_aborted(args, plan, state), file=out)
        return EXIT_INTERRUPTED
    except REDIS_ERRORS as exc:
        progress.close()
        print(f"streamer replay: redis error: {exc}", file=err)
        print(_aborted(args, plan, state), file=out)
        return 1
    progress.close()
    return _report(args, plan, state, time.monotonic() - started, out)


def _report(
    args: argparse.Namespace, plan: ReplayPlan, state: ReplayState, elapsed: float, out: TextIO
) -> int:
    if plan.dry_run:
        return _report_dry_run(args, plan, state, out)
    resume = state.resume_from(plan)
    rate = state.scanned / elapsed if elapsed > 0 else 0.0
    done = f"{state.matched} of {state.scanned} entries scanned in {elapsed:.2f}s ({rate:,.0f}/s)"
    if state.finished:
        print(f"replayed {done} from {_streams(plan)}", file=out)
        return 0
    print(f"interrupted: replayed {done}", file=out)
    print(f"resume with: {resume_command(args, resume, plan.end)}", file=out)
    return EXIT_INTERRUPTED


def _streams(plan: ReplayPlan) -> str:
    if len(plan.lanes) == 1:
        return plan.lanes[0].source
    return f"{len(plan.lanes)} streams ({', '.join(lane.name for lane in plan.lanes)})"


def _report_dry_run(
    args: argparse.Namespace, plan: ReplayPlan, state: ReplayState, out: TextIO
) -> int:
    # An interrupted count is a lower bound: say so, and how to count the rest.
    counted = f"{state.matched} of {state.scanned} entries match"
    if state.finished:
        print(f"dry run: {counted}; nothing written", file=out)
    else:
        print(f"interrupted dry run: {counted} so far (incomplete); nothing written", file=out)
    for entry_id, fields in state.samples:
        reason = fields.get(b"reason", b"").decode(errors="replace")
        extra = f" reason={reason}" if reason else ""
        print(f"  {entry_id.decode()}  {summary(fields)}{extra}", file=out)
    if state.finished:
        return 0
    print(f"resume with: {resume_command(args, state.resume_from(plan), plan.end)}", file=out)
    return EXIT_INTERRUPTED


def _aborted(args: argparse.Namespace, plan: ReplayPlan, state: ReplayState) -> str:
    # Stopped mid-round: the round in flight may or may not have been appended, in some
    # streams or all.
    resume = resume_command(args, state.resume_from(plan), plan.end)
    if plan.dry_run:
        return f"aborted dry run after {state.matched} matches (incomplete); resume with: {resume}"
    return (
        f"aborted after {state.matched} entries written; the round in flight may or may not "
        f"have been written; resume with: {resume}"
    )


def handle(args: argparse.Namespace) -> int:
    redis_settings = RedisSettings.from_env(Env())
    keys = Keys.from_settings(redis_settings)

    async def main() -> int:
        redis = connect(redis_settings.url, client_name="streamer-replay")
        stop = asyncio.Event()
        stop_on_interrupt(stop, sys.stderr)
        try:
            return await replay_command(redis, keys, args, sys.stdout, sys.stderr, stop)
        finally:
            await redis.aclose()

    try:
        return uvloop.run(main())
    except asyncio.CancelledError:  # aborted before the replay began
        return EXIT_INTERRUPTED
