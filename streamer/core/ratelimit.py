"""A token bucket. Pure: the clock is passed in."""

from __future__ import annotations

from collections.abc import Callable


class TokenBucket:
    """Allows ``rate_per_s`` on average, bursts of up to ``burst``."""

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
