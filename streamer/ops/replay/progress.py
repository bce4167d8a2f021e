"""Progress output on stderr: a rich bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from streamer.ops.replay.pacing import Estimate, progress_line


class ProgressOutput(Protocol):
    def update(self, scanned: int, matched: int) -> None: ...

    def close(self) -> None: ...


def progress_output(out: TextIO, estimate: Estimate, verb: str) -> ProgressOutput:
    if out.isatty():
        return BarOutput(out, estimate, verb)
    return LineOutput(out, estimate, verb)


class LineOutput:
    """A progress line every ``interval_s`` (logs and CI capture every line of a bar)."""

    def __init__(
        self,
        out: TextIO,
        estimate: Estimate,
        verb: str,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 2.0,
    ) -> None:
        self._out, self._estimate, self._verb = out, estimate, verb
        self._clock, self._interval_s = clock, interval_s
        self._started = self._last = clock()

    def update(self, scanned: int, matched: int) -> None:
        now = self._clock()
        if now - self._last < self._interval_s:
            return
        self._last = now
        line = progress_line(scanned, matched, self._estimate, now - self._started, self._verb)
        print(line, file=self._out, flush=True)

    def close(self) -> None:
        pass


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "-" if speed is None else f"{speed:,.0f} entries/s", style="progress.data.speed"
        )


class BarOutput:
    """Count, rate and ETA in a rich progress bar."""

    def __init__(self, out: TextIO, estimate: Estimate, verb: str) -> None:
        self._progress = Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[matched]} " + verb),
            _RateColumn(),
            TimeRemainingColumn(),
            console=Console(file=out),
        )
        self._task = self._progress.add_task("replay", total=estimate.count or None, matched=0)
        self._total = estimate.count
        self._progress.start()

    def update(self, scanned: int, matched: int) -> None:
        # The total of a partial range is an estimate; never let the count run past it.
        self._total = max(self._total, scanned)
        self._progress.update(self._task, completed=scanned, total=self._total, matched=matched)

    def close(self) -> None:
        self._progress.stop()
