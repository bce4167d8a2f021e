"""The chaos suite: fixtures, one figure line per scenario, the RELIABILITY.md table.

Scenarios carry the ``chaos`` marker: `just test` deselects them (``-m "not chaos"`` in
pytest's addopts) and `just chaos` selects them. Each takes the ``stack`` fixture, records
its figures there (``stack.figures``, ``stack.notes``), and the hooks below print the
figure line as the scenario ends and write the table when the session finishes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from bridges.rabbitmq import dead_letter_queue, declare_queue
from tests.chaos.reliability import Row, now, summary, write_section
from tests.chaos.stack import Stack
from tests.support.paths import REPO_ROOT
from tests.support.rabbit import channel, delete_queues, unique_queue

RELIABILITY = REPO_ROOT / "RELIABILITY.md"
_ROWS = pytest.StashKey[list[Row]]()
_SCENARIOS = pytest.StashKey[list[str]]()
_STARTED = pytest.StashKey[tuple[float, float]]()


@pytest.fixture
def queue() -> Iterator[str]:
    """A durable queue on the shared RabbitMQ that only this scenario uses; deleted after,
    with its dead-letter queue."""
    name = unique_queue("chaos")
    with channel() as ch:
        declare_queue(ch, name)
    yield name
    delete_queues(name, dead_letter_queue(name))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """This scenario's private redis-server (started) and the processes it starts."""
    stack = Stack(tmp_path)
    stack.start_redis()
    try:
        yield stack
    finally:
        stack.close()


def _scenario(item: pytest.Item) -> str:
    return item.name.removeprefix("test_")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # (Not pytest_sessionstart: that runs only for conftests found before collection.)
    config.stash[_STARTED] = (time.monotonic(), os.getloadavg()[0])
    config.stash[_ROWS] = []
    # Before -k/-m deselect anything: every scenario that exists keeps its row in the table.
    config.stash[_SCENARIOS] = [
        _scenario(item) for item in items if item.get_closest_marker("chaos") is not None
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    ended = report.when == "call" or (report.when == "setup" and report.failed)
    if ended and item.get_closest_marker("chaos") is not None:
        row = _row(item, report, call.duration)
        item.config.stash[_ROWS].append(row)
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(row.line())
    return report


def _row(item: pytest.Item, report: pytest.TestReport, seconds: float) -> Row:
    stack = getattr(item, "funcargs", {}).get("stack")
    failure = ""
    if report.failed:
        failure = _first_line(report)
    return Row(
        scenario=_scenario(item),
        passed=report.passed,
        failure=failure,
        figures=None if stack is None else stack.figures,
        crashes=0 if stack is None else len(stack.crashes()),
        seconds=seconds,
        notes="" if stack is None else "; ".join(stack.problems + stack.notes),
        run=now(),
    )


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = (getattr(crash, "message", None) or str(report.longrepr)).strip()
    first = message.splitlines()[0] if message else "failed"
    return first.removeprefix("AssertionError: ")[:200]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash.get(_ROWS, [])
    if rows:
        terminalreporter.section("chaos figures")
        for row in rows:
            terminalreporter.write_line(row.line())


def pytest_sessionfinish(session: pytest.Session) -> None:
    rows = session.config.stash.get(_ROWS, [])
    if not rows:
        return
    started, load = session.config.stash[_STARTED]
    text = summary(len(rows), time.monotonic() - started, load)
    scenarios: list[str] = session.config.stash.get(_SCENARIOS, [])
    write_section(RELIABILITY, rows, scenarios, text)
