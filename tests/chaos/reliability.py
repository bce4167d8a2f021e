"""One chaos scenario's result as a figure line and a row of the table in RELIABILITY.md.

The table lives between two markers in RELIABILITY.md and is rewritten after every run; the
text around it is written by people. Rows of scenarios that did not run this time (``just
chaos -k …``) are kept with their own date; rows of scenarios that no longer exist go.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.support.load import Figures

BEGIN = "<!-- chaos:begin (written by `just chaos`; edit outside these markers) -->"
END = "<!-- chaos:end -->"
HEADER = (
    "| scenario | result | events | lost | duplicated | out of order | crashes | seconds "
    "| notes | run |"
)
_RULE = "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    passed: bool
    failure: str  # the first line of the failure; empty when passed
    figures: Figures | None  # None when the scenario failed before counting
    crashes: int
    seconds: float
    notes: str
    run: str  # when, UTC

    def line(self) -> str:
        """The scenario's figure line, as `just chaos` prints it."""
        f = self.figures
        counts = (
            "events -, lost -, duplicated -, out of order -"
            if f is None
            else f"events {f.events}, lost {f.lost}, duplicated {f.duplicated}, "
            f"out of order {f.out_of_order}"
        )
        verdict = "PASS" if self.passed else f"FAIL ({self.failure})"
        extra = f"; {self.notes}" if self.notes else ""
        return (
            f"chaos {self.scenario}: {counts}, crashes {self.crashes} "
            f"[{self.seconds:.1f} s{extra}] {verdict}"
        )

    def markdown(self) -> str:
        f = self.figures
        numbers = ["-"] * 4 if f is None else [f.events, f.lost, f.duplicated, f.out_of_order]
        result = "pass" if self.passed else f"**FAIL**: {_cell(self.failure, 100)}"
        cells = [self.scenario, result, *numbers, self.crashes, f"{self.seconds:.0f}"]
        cells += [_cell(self.notes), self.run]
        return "| " + " | ".join(str(c) for c in cells) + " |"


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")


def write_section(path: Path, rows: list[Row], scenarios: Iterable[str], summary: str) -> None:
    """Rewrite the table in ``path``: this run's rows, then kept rows of ``scenarios`` that
    did not run, in ``scenarios`` order."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    before, old_rows, after = _split(text)
    fresh = {row.scenario: row.markdown() for row in rows}
    ordered = [name for name in scenarios]
    lines = [fresh.get(name) or old_rows.get(name) for name in ordered]
    body = [BEGIN, summary, "", HEADER, _RULE, *[line for line in lines if line], END]
    path.write_text(before + "\n".join(body) + after, encoding="utf-8")


def _split(text: str) -> tuple[str, dict[str, str], str]:
    """(text before the section, old rows by scenario, text after it)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return (text.rstrip("\n") + "\n\n" if text else ""), {}, "\n"
    rows = {}
    for line in text[start:end].splitlines():
        match = re.match(r"^\| ([^|]+?) \| ", line)
        if match and match[1] not in ("scenario", "---"):
            rows[match[1]] = line
    return text[:start], rows, text[end + len(END) :]


def summary(count: int, seconds: float, load_before: float) -> str:
    load_after = os.getloadavg()[0]
    return (
        f"Last run {now()} UTC on {_commit()}: {count} scenarios in {seconds:.0f} s on "
        f"{os.cpu_count()} cores, load average {load_before:.1f} before and "
        f"{load_after:.1f} after."
    )


def _commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit {sha}" + (" with uncommitted changes" if dirty else "")
