"""The APNs provider token: an ES256 JWT shared by every connection, reused for 40 minutes.

Apple: refresh it no more often than every 20 minutes (else TooManyProviderTokenUpdates) and
no less often than every 60 (else ExpiredProviderToken).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from streamer.push.apns.settings import ApnsSettings

JWT_REUSE_S = 40 * 60


def jwt_due(issued_at: float | None, now: float, reuse_s: float = JWT_REUSE_S) -> bool:
    """Whether a new provider JWT is needed (none yet, too old, or the clock went back)."""
    return issued_at is None or not 0 <= now - issued_at < reuse_s


class ProviderToken:
    """The ``authorization`` value; signing happens only when due, or when Apple said
    ExpiredProviderToken for the value we are still using."""

    def __init__(
        self,
        settings: ApnsSettings,
        on_mint: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = load_pem_private_key(settings.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # checked by the settings
        self._key = key
        self._key_id = settings.key_id
        self._team_id = settings.team_id
        self._on_mint = on_mint
        self._clock = clock
        self._issued_at: float | None = None
        self._header = b""

    def header(self) -> bytes:
        now = self._clock()
        if jwt_due(self._issued_at, now):
            self._mint(now)
        return self._header

    def refresh(self, stale: bytes) -> bytes:
        """Apple refused ``stale``: mint a new JWT unless a concurrent request already did,
        so a burst of rejections costs one new token, not one each."""
        if stale == self._header:
            self._mint(self._clock())
        return self._header

    def _mint(self, now: float) -> None:
        claims = {"iss": self._team_id, "iat": int(now)}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})
        self._issued_at = now
        self._header = f"bearer {token}".encode()
        self._on_mint()
