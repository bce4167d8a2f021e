"""API-key authentication of the publish routes. Pure: no I/O.

Clients send ``Authorization: apikey <key>`` (the scheme name in any case, RFC 9110 11.1).
The presented key is compared with every configured key in constant time, and with all of
them, so neither the time taken nor an early exit tells which key, or how much of one,
matched.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

SCHEME = "apikey"
# Sent with every 401 (RFC 9110 11.6.1): how to authenticate.
CHALLENGE = f'{SCHEME} realm="streamer"'


def presented_key(header: str | None) -> bytes | None:
    """The key of an ``apikey <key>`` Authorization header; None if absent or malformed."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != SCHEME or not key or " " in key:
        return None
    return key.encode()


def authorized(header: str | None, keys: Sequence[bytes]) -> bool:
    """Whether the header presents one of ``keys``."""
    key = presented_key(header)
    if key is None:
        return False
    found = False
    for candidate in keys:  # no early exit: every key is compared
        found |= hmac.compare_digest(key, candidate)
    return found
