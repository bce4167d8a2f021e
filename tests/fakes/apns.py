"""A fake APNs provider API (POST /3/device/<token>), validating what Apple validates.

Checks the ES256 provider JWT against the test key (``kid``, ``iss``, ``iat`` age), the
``apns-topic``, the path, the 4 KB payload limit, push type, priority and collapse id.
Then answers by device-token prefix:

    bad      400 BadDeviceToken          gone     410 Unregistered (with timestamp)
    busy     429 TooManyRequests         err      500 InternalServerError
    unavail  503 ServiceUnavailable      goaway   GOAWAY, every time
    goaway1  GOAWAY on the first request for the token, then 200
    flaky    503 on the first request for the token, then 200
    expired  403 ExpiredProviderToken on the first request (the JWT presented is expired
             from then on), then 200 for a new JWT
    slow     held until ``release()``, then 200
    else     200
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from typing import Any

import jwt

from tests.fakes.h2server import GOAWAY, Reply, Request, Response

MAX_PAYLOAD_BYTES = 4096
MAX_TOKEN_AGE_S = 3600  # Apple: provider tokens older than an hour are expired
PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm", "liveactivity"}


class FakeApns:
    def __init__(self, public_pem: bytes, key_id: str, team_id: str, topic: str) -> None:
        self._public_key = public_pem
        self._key_id = key_id
        self._team_id = team_id
        self.topic = topic
        self.attempts: Counter[str] = Counter()  # requests that reached the token's handling
        self.accepted: Counter[str] = Counter()
        self.last: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
        self.jwts: defaultdict[str, list[str]] = defaultdict(list)  # token -> JWTs presented
        self._verified: dict[str, float] = {}  # JWT -> iat
        self._expired: set[str] = set()
        self._released = asyncio.Event()

    def release(self) -> None:
        """Answer held ("slow") requests. Call on the server's loop."""
        self._released.set()

    def hold(self) -> None:
        """Hold "slow" requests again (until the next ``release``). Call on the server's loop."""
        self._released = asyncio.Event()

    def handle(self, request: Request) -> Reply | Awaitable[Reply]:
        apns_id = request.headers.get("apns-id", "00000000-0000-0000-0000-000000000000")
        checked = self._check(request)
        if isinstance(checked, tuple):
            return _answer(apns_id, *checked)
        token = request.path.removeprefix("/3/device/")
        self.attempts[token] += 1
        bearer = request.headers["authorization"][len("bearer ") :]
        self.jwts[token].append(bearer)
        self.last[token] = (request.headers, checked)
        return self._by_prefix(token, apns_id, bearer)

    def _check(self, request: Request) -> tuple[int, str] | dict[str, Any]:
        """The validation Apple does before looking at the device token: an error (status,
        reason), or the payload."""
        if request.method != "POST":
            return 405, "MethodNotAllowed"
        if not request.path.startswith("/3/device/"):
            return 404, "BadPath"
        if request.path == "/3/device/":
            return 400, "MissingDeviceToken"
        auth = self._auth_error(request.headers.get("authorization"))
        if auth is not None:
            return 403, auth
        topic = request.headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic"
        if topic != self.topic:
            return 400, "TopicDisallowed"
        if len(request.body) > MAX_PAYLOAD_BYTES:
            return 413, "PayloadTooLarge"
        return self._check_payload(request)

    def _check_payload(self, request: Request) -> tuple[int, str] | dict[str, Any]:
        try:
            payload = json.loads(request.body)
        except ValueError:
            return 400, "PayloadEmpty"
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return 400, "PayloadEmpty"
        push_type = request.headers.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            return 400, "InvalidPushType"
        priority = request.headers.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority != "5"):
            return 400, "BadPriority"
        if len(request.headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId"
        expiration = request.headers.get("apns-expiration", "0")
        if not expiration.isdigit():
            return 400, "BadExpirationDate"
        return payload

    def _auth_error(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("bearer "):
            return "MissingProviderToken"
        token = authorization[len("bearer ") :]
        if token in self._expired:
            return "ExpiredProviderToken"
        iat = self._verified.get(token)
        if iat is None:
            iat = self._verify(token)
            if iat is None:
                return "InvalidProviderToken"
            self._verified[token] = iat
        if time.time() - iat > MAX_TOKEN_AGE_S:
            return "ExpiredProviderToken"
        return None

    def _verify(self, token: str) -> float | None:
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            return None
        if header.get("kid") != self._key_id or claims.get("iss") != self._team_id:
            return None
        return float(claims["iat"])

    def _by_prefix(self, token: str, apns_id: str, bearer: str) -> Reply | Awaitable[Reply]:
        first = self.attempts[token] == 1
        if token.startswith("goaway1"):
            return GOAWAY if first else self._accept(token, apns_id)
        if token.startswith("goaway"):
            return GOAWAY
        if token.startswith("flaky"):
            return (
                _answer(apns_id, 503, "ServiceUnavailable")
                if first
                else self._accept(token, apns_id)
            )
        if token.startswith("expired") and first:
            self._expired.add(bearer)
            return _answer(apns_id, 403, "ExpiredProviderToken")
        if token.startswith("slow"):
            return self._held(token, apns_id)
        for prefix, status, reason in _FIXED:
            if token.startswith(prefix):
                return _answer(apns_id, status, reason)
        return self._accept(token, apns_id)

    async def _held(self, token: str, apns_id: str) -> Reply:
        await self._released.wait()
        return self._accept(token, apns_id)

    def _accept(self, token: str, apns_id: str) -> Response:
        self.accepted[token] += 1
        return Response(200, headers=(("apns-id", apns_id),))


_FIXED = (
    ("bad", 400, "BadDeviceToken"),
    ("gone", 410, "Unregistered"),
    ("busy", 429, "TooManyRequests"),
    ("err", 500, "InternalServerError"),
    ("unavail", 503, "ServiceUnavailable"),
)


def _answer(apns_id: str, status: int, reason: str) -> Response:
    body: dict[str, Any] = {"reason": reason}
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    return Response(status, json.dumps(body).encode(), (("apns-id", apns_id),))
