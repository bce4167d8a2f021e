"""Handshake authentication (pure: no I/O).

A token arrives as ``Authorization: Bearer``, ``?token=`` or the subprotocol
``bearer.<token>`` (browsers cannot set headers on a WebSocket). The verifier accepts only
the one algorithm its key implies, so a token cannot pick its own verification method
(``alg: none`` and HS256-signed-with-the-public-key tokens are rejected).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from streamer.contract.websocket import SUBPROTOCOL_PREFIX
from streamer.gateway.settings import AuthSettings
from streamer.infra.errors import ConfigError

HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403


@dataclass(frozen=True, slots=True)
class Credentials:
    token: str
    subprotocol: str | None  # the offered subprotocol that carried it; the server selects it


@dataclass(frozen=True, slots=True)
class Granted:
    user_id: str
    expires_at: float  # unix seconds; open sockets are closed then
    subprotocol: str | None
    topics: tuple[str, ...] = ()  # the topics claim: names, or prefixes ending in "*"


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    reason: str  # bounded vocabulary, safe for logs and metrics; never sent to clients


def find_credentials(
    authorization: str | None, query_token: str | None, subprotocols: Sequence[str]
) -> Credentials | None:
    """The token, from the header, then the query, then the first bearer subprotocol."""
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return Credentials(value.strip(), None)
    if query_token:
        return Credentials(query_token, None)
    for offered in subprotocols:
        if offered.startswith(SUBPROTOCOL_PREFIX) and len(offered) > len(SUBPROTOCOL_PREFIX):
            return Credentials(offered[len(SUBPROTOCOL_PREFIX) :], offered)
    return None


class TokenVerifier:
    """Verifies handshake tokens against one key and one algorithm, chosen at start-up."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._key: Any
        if settings.secret is not None:
            self._key, self._algorithm = settings.secret, "HS256"
        else:
            assert settings.public_key is not None
            self._key, self._algorithm = _public_key(settings.public_key)

    @property
    def algorithm(self) -> str:
        return self._algorithm

    def verify(self, credentials: Credentials | None, user_id: str) -> Granted | Denied:
        if credentials is None:
            return Denied(HTTP_UNAUTHORIZED, "missing_token")
        try:
            claims = self._decode(credentials.token)
        except jwt.ExpiredSignatureError:
            return Denied(HTTP_UNAUTHORIZED, "expired")
        except jwt.InvalidTokenError:
            return Denied(HTTP_UNAUTHORIZED, "invalid_token")
        if claims["sub"] != user_id:
            return Denied(HTTP_FORBIDDEN, "wrong_user")
        topics = tuple(claims.get("topics", ()))
        return Granted(user_id, float(claims["exp"]), credentials.subprotocol, topics)

    def _decode(self, token: str) -> dict[str, Any]:
        s = self._settings
        claims: dict[str, Any] = jwt.decode(
            token,
            self._key,
            algorithms=[self._algorithm],
            audience=s.audience,
            issuer=s.issuer,
            leeway=s.leeway_s,
            options={"require": ["exp", "sub"], "verify_aud": s.audience is not None},
        )
        if not isinstance(claims.get("sub"), str) or not isinstance(claims["exp"], int | float):
            raise jwt.InvalidTokenError("sub must be a string and exp a number")
        topics = claims.get("topics", [])
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise jwt.InvalidTokenError("topics must be a list of strings")
        return claims


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """An empty allowlist admits every origin (and clients that send none)."""
    if not allowed:
        return True
    return origin is not None and origin in allowed


def _public_key(pem: str) -> tuple[Any, str]:
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigError(f"JWT_PUBLIC_KEY_FILE: not a PEM public key ({exc})") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError("JWT_PUBLIC_KEY_FILE: expected an RSA or P-256 EC public key")


def mint_token(secret: str, user_id: str, ttl_s: int, now: float | None = None) -> str:
    """An HS256 token for local development and tests (production tokens come from auth)."""
    issued = int(time.time() if now is None else now)
    return jwt.encode({"sub": user_id, "iat": issued, "exp": issued + ttl_s}, secret, "HS256")
