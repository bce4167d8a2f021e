"""Unit tests: the ack / retry / dead-letter decision and backoff (no I/O)."""

from __future__ import annotations

import random

from streamer.core.policy import Action, ChannelResult, Outcome, backoff_ms, decide, over_delivered


def r(outcome: Outcome, channel: str = "push_ios", **kw: object) -> ChannelResult:
    return ChannelResult(channel, outcome, **kw)  # type: ignore[arg-type]


def test_all_done_is_an_ack() -> None:
    """Delivered, skipped and dead-token channels together mean ack."""
    results = [r(Outcome.DELIVERED, "websocket"), r(Outcome.SKIPPED), r(Outcome.DEAD_TOKEN)]
    assert decide(results, 1, 5).action is Action.ACK


def test_permanent_failure_dead_letters_at_once() -> None:
    """A permanent failure dead-letters with its reason, even on the first delivery."""
    d = decide([r(Outcome.RETRY), r(Outcome.PERMANENT, reason="BadTopic")], 1, 5)
    assert (d.action, d.reason) == (Action.DEAD_LETTER, "BadTopic")


def test_retry_until_max_deliveries_then_dead_letter() -> None:
    """A transient failure retries until the delivery count reaches the maximum."""
    results = [r(Outcome.RETRY, reason="503", retry_after_ms=2000)]
    retry = decide(results, 4, 5)
    assert (retry.action, retry.retry_after_ms) == (Action.RETRY, 2000)
    final = decide(results, 5, 5)
    assert (final.action, final.reason) == (Action.DEAD_LETTER, "max_deliveries")
    assert "503" in final.error


def test_over_delivered_only_past_the_maximum() -> None:
    """An entry is over-delivered strictly after the maximum."""
    assert not over_delivered(5, 5)
    assert over_delivered(6, 5)


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    """Backoff is jittered within an exponential ceiling, capped, and never below Retry-After."""
    rng = random.Random(7)
    first = [backoff_ms(1, base_ms=100, cap_ms=10_000, rng=rng) for _ in range(50)]
    assert all(50 <= d <= 100 for d in first)
    assert len(set(first)) > 10
    late = [backoff_ms(20, base_ms=100, cap_ms=10_000, rng=rng) for _ in range(50)]
    assert all(5_000 <= d <= 10_000 for d in late)
    assert backoff_ms(1, base_ms=100, cap_ms=10_000, retry_after_ms=30_000, rng=rng) == 30_000
