"""What a provider's answer means: a Verdict, decided by each provider's pure classifier
(``<provider>/outcome.py``) and carried out by the sender and the worker's policy.

Reasons are bounded (known provider codes, else the HTTP status) so they can label metrics.
"""

from __future__ import annotations

import email.utils
import enum
from dataclasses import dataclass

from streamer.contract.event import Channel
from streamer.core.policy import ChannelResult, Outcome


class Kind(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # transient: back off (honouring Retry-After), DLQ after MAX_DELIVERIES
    DEAD_TOKEN = "dead_token"  # record in the feedback stream and ack
    PERMANENT = "permanent"  # this message can never be sent: DLQ
    CONFIG = "config_error"  # our credentials/topic/project are wrong: DLQ, alarm
    REFRESH_AUTH = "refresh_auth"  # our provider credential expired: get a new one, send again


_OUTCOMES = {
    Kind.DELIVERED: Outcome.DELIVERED,
    Kind.RETRY: Outcome.RETRY,
    Kind.DEAD_TOKEN: Outcome.DEAD_TOKEN,
    Kind.PERMANENT: Outcome.PERMANENT,
    Kind.CONFIG: Outcome.PERMANENT,
    # Only reached when a fresh credential was refused too (see Provider.refused_again);
    # that clears up by itself or not at all, and MAX_DELIVERIES bounds it either way.
    Kind.REFRESH_AUTH: Outcome.RETRY,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    reason: str = ""  # bounded: "<provider>:<code>"
    detail: str = ""  # the provider's words, for the DLQ's error field
    retry_after_ms: int | None = None

    def result(self, channel: Channel) -> ChannelResult:
        if self is DELIVERED:  # the usual answer: one shared, immutable result per channel
            return _delivered(channel)
        return ChannelResult(
            channel, _OUTCOMES[self.kind], self.reason, self.detail, self.retry_after_ms
        )


DELIVERED = Verdict(Kind.DELIVERED)
_DELIVERED_RESULTS: dict[str, ChannelResult] = {}


def _delivered(channel: Channel) -> ChannelResult:
    result = _DELIVERED_RESULTS.get(channel)
    if result is None:
        result = _DELIVERED_RESULTS[channel] = ChannelResult(channel, Outcome.DELIVERED)
    return result


def connection_failure(provider: str, what: str) -> Verdict:
    """No answer (refused or dropped connection, GOAWAY, timeout): transient. The provider
    may have accepted the push all the same; sending it again is at-least-once."""
    return Verdict(Kind.RETRY, f"{provider}:connection", what)


def retry_after_ms(value: str | None, now_s: float) -> int | None:
    """A Retry-After header (delay in seconds, or an HTTP date) as milliseconds from now."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((when.timestamp() - now_s) * 1000))
