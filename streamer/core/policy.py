"""Delivery decisions: what to do with an entry once its channels have been tried. Pure.

The worker's consumer carries the decisions out; this module only decides.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from streamer.contract.event import Channel

MAX_DELIVERIES = "max_deliveries"


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # done
    SKIPPED = "skipped"  # channel disabled here; counted, nothing else to do
    RETRY = "retry"  # transient; try again later
    DEAD_TOKEN = "dead_token"  # device token rejected; recorded as feedback, done
    PERMANENT = "permanent"  # can never succeed as is; dead-letter


@dataclass(frozen=True, slots=True)
class ChannelResult:
    channel: Channel
    outcome: Outcome
    reason: str = ""
    error: str = ""
    retry_after_ms: int | None = None


class Action(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""
    error: str = ""
    retry_after_ms: int | None = None


ACK = Decision(Action.ACK)


def decide(results: list[ChannelResult], deliveries: int, max_deliveries: int) -> Decision:
    """Ack when every channel is done; dead-letter a permanent failure at once; retry a
    transient one until the entry has been delivered ``max_deliveries`` times."""
    for result in results:
        if result.outcome is Outcome.PERMANENT:
            return Decision(Action.DEAD_LETTER, result.reason, result.error)
    retries = [r for r in results if r.outcome is Outcome.RETRY]
    if not retries:
        return ACK
    first = retries[0]
    if deliveries >= max_deliveries:
        error = f"{first.channel}: {first.reason} {first.error}".strip()
        return Decision(Action.DEAD_LETTER, MAX_DELIVERIES, error)
    hints = [r.retry_after_ms for r in retries if r.retry_after_ms is not None]
    return Decision(Action.RETRY, first.reason, first.error, max(hints) if hints else None)


def over_delivered(deliveries: int, max_deliveries: int) -> bool:
    """A reclaimed entry already delivered more often than allowed (it may crash workers):
    dead-letter it without trying again."""
    return deliveries > max_deliveries


def backoff_ms(
    deliveries: int,
    *,
    base_ms: int,
    cap_ms: int,
    retry_after_ms: int | None = None,
    rng: random.Random | None = None,
) -> int:
    """Exponential backoff with full jitter, never sooner than a provider's Retry-After."""
    ceiling = min(cap_ms, base_ms * 2 ** max(0, deliveries - 1))
    delay = int((rng or random).uniform(ceiling / 2, ceiling))
    if retry_after_ms is not None:
        delay = max(delay, retry_after_ms)
    return min(delay, cap_ms) if retry_after_ms is None else delay
