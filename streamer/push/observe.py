"""Metrics and logs of push outcomes, shared by every provider's sender.

A configuration error (revoked key, wrong topic or project) fails every push until an
operator acts: it is counted each time but logged once per interval, not once per push.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streamer.infra import metrics
from streamer.infra.logs import mask_token
from streamer.push.verdict import Kind, Verdict

log = logging.getLogger("streamer.push")

CONFIG_LOG_INTERVAL_S = 60.0


class Throttle:
    """True for a key at most once per interval."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        self._last[key] = now
        return True


class PushObserver:
    def __init__(self, provider: str, throttle: Throttle | None = None) -> None:
        self.provider = provider
        self._throttle = throttle or Throttle(CONFIG_LOG_INTERVAL_S)
        self._suppressed = 0
        self._latency = metrics.PUSH_LATENCY.labels(provider)
        # Children made once (labels() costs more than inc()); every outcome starts at 0.
        self._outcomes = {kind: metrics.PUSHES.labels(provider, kind.value) for kind in Kind}
        self._dead_tokens = metrics.PUSH_DEAD_TOKENS.labels(provider)

    def request_done(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def credential_refreshed(self) -> None:
        metrics.PUSH_CREDENTIAL_REFRESHES.labels(self.provider).inc()

    def outcome(self, verdict: Verdict, token: str) -> None:
        self._outcomes[verdict.kind].inc()
        if verdict.kind is Kind.DEAD_TOKEN:
            self._dead_tokens.inc()
            log.info("%s: dead token %s (%s)", self.provider, mask_token(token), verdict.reason)
        elif verdict.kind is Kind.CONFIG:
            self._config_error(verdict)

    def _config_error(self, verdict: Verdict) -> None:
        metrics.PUSH_CONFIG_ERRORS.labels(self.provider, verdict.reason).inc()
        if not self._throttle.allow(verdict.reason):
            self._suppressed += 1
            return
        log.error(
            "%s rejected our configuration: %s (%s); pushes are dead-lettered until it is "
            "fixed (%d similar errors since the last report)",
            self.provider,
            verdict.reason,
            verdict.detail,
            self._suppressed,
        )
        self._suppressed = 0
