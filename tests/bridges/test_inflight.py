"""Unit tests for the one-batch-at-a-time writer thread (no I/O)."""

from __future__ import annotations

import threading

import pytest

from bridges.inflight import InFlight


def test_a_job_runs_in_another_thread_and_wakes_the_caller_when_it_ends() -> None:
    """The job runs off the caller's thread; on_end is called once it has ended; take()
    gives back the context and the result and frees the slot."""
    inflight: InFlight[str, str] = InFlight("test")
    release, ended = threading.Event(), threading.Event()
    try:
        inflight.start(
            "ctx", lambda: release.wait(5) and threading.current_thread().name, ended.set
        )
        assert inflight.busy and not inflight.finished
        release.set()
        assert ended.wait(5)
        assert inflight.finished
        context, thread_name = inflight.take()
        assert context == "ctx" and thread_name.startswith("test")
        assert not inflight.busy
    finally:
        inflight.close()


def test_one_job_at_a_time_and_failures_reach_the_caller() -> None:
    """A second job before take() is a bug; what the job raised, take() raises."""
    inflight: InFlight[str, None] = InFlight("test")

    def fail() -> None:
        raise RuntimeError("redis gone")

    try:
        inflight.start("ctx", fail, lambda: None)
        with pytest.raises(AssertionError, match="one job at a time"):
            inflight.start("other", fail, lambda: None)
        with pytest.raises(RuntimeError, match="redis gone"):
            inflight.take()
        assert not inflight.busy
    finally:
        inflight.close()
