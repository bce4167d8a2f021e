"""Push metrics and logs: bounded labels, config errors logged once per interval."""

from __future__ import annotations

from streamer.push.observe import PushObserver, Throttle
from streamer.push.verdict import Kind, Verdict
from tests.fakes.harness import metric


def test_throttle_allows_once_per_interval_per_key() -> None:
    """Config errors are logged once per interval per reason."""
    now = [0.0]
    throttle = Throttle(60.0, lambda: now[0])
    assert [throttle.allow("a"), throttle.allow("a"), throttle.allow("b")] == [True, False, True]
    now[0] = 61.0
    assert throttle.allow("a")


def test_outcomes_are_counted_by_provider_and_kind() -> None:
    """Each verdict counts once under its provider and kind; dead tokens also on their own."""
    observer = PushObserver("apns")
    sent = metric("streamer_push_sent_total", provider="apns", outcome="dead_token")
    dead = metric("streamer_push_dead_tokens_total", provider="apns")
    observer.outcome(Verdict(Kind.DEAD_TOKEN, "apns:Unregistered"), "a" * 64)
    assert metric("streamer_push_sent_total", provider="apns", outcome="dead_token") == sent + 1
    assert metric("streamer_push_dead_tokens_total", provider="apns") == dead + 1
