"""Batch sizes, rate limiting, progress estimates. Pure: callers pass in time and counts."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.contract.ids import StreamId

# With --rate, aim for about this many batches a second: smooth load, fine-grained resume.
_BATCHES_PER_S = 10


def batch_size(batch: int, rate: float | None) -> int:
    """Entries per read and write; small enough under a rate limit to pace smoothly."""
    if rate is None:
        return batch
    return max(1, min(batch, int(rate / _BATCHES_PER_S)))


def pause_s(written: int, elapsed_s: float, rate: float | None) -> float:
    """How long to wait before the next batch so ``written`` entries took at least
    ``written / rate`` seconds."""
    if rate is None:
        return 0.0
    return max(0.0, written / rate - elapsed_s)


@dataclass(frozen=True, slots=True)
class Estimate:
    """How many entries a range holds: exact when it covers the whole stream, otherwise
    proportional to the share of the stream's time span it covers."""

    count: int
    exact: bool


def estimate_entries(
    start: StreamId, end: StreamId, first: StreamId | None, last: StreamId | None, length: int
) -> Estimate:
    if first is None or last is None or length == 0 or start > last or end < first:
        return Estimate(0, True)
    if start <= first and end >= last:
        return Estimate(length, True)
    low, high = max(start.ms, first.ms), min(end.ms, last.ms)
    span = last.ms - first.ms + 1
    return Estimate(max(1, round(length * (high - low + 1) / span)), False)


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    if done <= 0 or elapsed_s <= 0 or total <= done:
        return None
    return (total - done) * elapsed_s / done


def progress_line(
    scanned: int, matched: int, estimate: Estimate, elapsed_s: float, verb: str = "written"
) -> str:
    """The periodic progress line printed when stderr is not a terminal."""
    rate = scanned / elapsed_s if elapsed_s > 0 else 0.0
    total = f"{'' if estimate.exact else '~'}{estimate.count}"
    eta = eta_s(scanned, estimate.count, elapsed_s)
    eta_text = "-" if eta is None else f"{eta:.0f}s"
    return (
        f"replay: scanned {scanned}/{total}, {verb} {matched}, "
        f"{rate:,.0f} entries/s, eta {eta_text}"
    )
