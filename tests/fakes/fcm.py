"""A fake FCM HTTP v1 API and its OAuth 2.0 token endpoint, on one HTTP/1.1 server.

``POST /token`` checks the RS256 JWT-bearer assertion against the test service account's
public key (issuer, audience, scope, lifetime) and issues an access token.
``POST /v1/projects/<id>/messages:send`` checks the Bearer token, the project, the
message (token present, data values strings only, android options) and answers with FCM's
error JSON (google.rpc status, FcmError details, Retry-After) by device-token prefix:

    gone       404 UNREGISTERED              bad     400 INVALID_ARGUMENT (the token)
    busy       429 QUOTA_EXCEEDED + Retry-After
    err        500 INTERNAL                  unavail 503 UNAVAILABLE
    mismatch   403 SENDER_ID_MISMATCH        thirdparty 401 THIRD_PARTY_AUTH_ERROR
    revoke     401 UNAUTHENTICATED on the first request (the access token presented is
               revoked), then 200 for a new token
    flaky      503 on the first request for the token, then 200
    unsteady   the same as flaky (the APNs fake accepts it: for tests where only FCM fails)
    slow       held until ``release()``, then 200
    else       200 {"name": "projects/<id>/messages/<n>"}
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import jwt

from tests.fakes.h2server import Reply, Request, Response

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")


class FakeFcm:
    def __init__(
        self,
        public_pem: bytes,
        client_email: str,
        project_id: str,
        retry_after: str = "1",
        token_ttl_s: int = 3600,
    ) -> None:
        self._public_pem = public_pem
        self._client_email = client_email
        self._path = f"/v1/projects/{project_id}/messages:send"
        self._project_id = project_id
        self.retry_after = retry_after
        self._token_ttl_s = token_ttl_s
        self.token_requests = 0
        self._access: dict[str, float] = {}  # access token -> expiry
        self.attempts: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.last: dict[str, dict[str, Any]] = {}
        self._released = asyncio.Event()
        self._sent = 0

    def release(self) -> None:
        """Answer held ("slow") requests. Call on the server's loop."""
        self._released.set()

    def hold(self) -> None:
        """Hold "slow" requests again (until the next ``release``). Call on the server's loop."""
        self._released = asyncio.Event()

    def handle(self, request: Request) -> Reply | Awaitable[Reply]:
        if request.method != "POST":
            return _error(405, "INVALID_ARGUMENT", "Method not allowed")
        if request.path == "/token":
            return self._token(request)
        if request.path.endswith("/messages:send") and request.path != self._path:
            return _error(404, "NOT_FOUND", "Requested entity was not found.")
        if request.path != self._path:
            return _error(404, "NOT_FOUND", "Not found")
        bearer = request.headers.get("authorization", "")
        if self._access.get(bearer.removeprefix("Bearer "), 0) < time.time():
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        message = _message(request.body)
        if isinstance(message, Response):
            return message
        token = message["token"]
        self.attempts[token] += 1
        self.last[token] = message
        return self._by_prefix(token, bearer.removeprefix("Bearer "))

    def _by_prefix(self, token: str, access: str) -> Reply | Awaitable[Reply]:
        first = self.attempts[token] == 1
        if token.startswith("revoke") and first:
            self._access.pop(access, None)
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if token.startswith(("flaky", "unsteady")) and first:
            return _error(503, "UNAVAILABLE", "The service is unavailable.", "UNAVAILABLE")
        if token.startswith("slow"):
            return self._held(token)
        if token.startswith("busy"):
            return _error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded.",
                "QUOTA_EXCEEDED",
                headers=(("retry-after", self.retry_after),),
            )
        if token.startswith("bad"):
            return _error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
                violations=(("message.token", "Invalid registration token"),),
            )
        for prefix, status, google_status, code in _FIXED:
            if token.startswith(prefix):
                return _error(status, google_status, f"{code} (fake)", code)
        return self._accept(token)

    async def _held(self, token: str) -> Reply:
        await self._released.wait()
        return self._accept(token)

    def _accept(self, token: str) -> Response:
        self.accepted[token] += 1
        self._sent += 1
        name = f"projects/{self._project_id}/messages/{self._sent}"
        return _json(200, {"name": name})

    def _token(self, request: Request) -> Response:
        form = urllib.parse.parse_qs(request.body.decode())
        if form.get("grant_type") != [JWT_BEARER] or not form.get("assertion"):
            return _json(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                form["assertion"][0],
                self._public_pem,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidTokenError as exc:
            return _json(400, {"error": "invalid_grant", "error_description": str(exc)})
        if claims["iss"] != self._client_email or claims["exp"] - claims["iat"] > 3600:
            return _json(400, {"error": "invalid_grant", "error_description": "Invalid JWT."})
        if SCOPE not in str(claims.get("scope", "")).split():
            return _json(400, {"error": "invalid_scope"})
        access = secrets.token_urlsafe(24)
        self._access[access] = time.time() + self._token_ttl_s
        self.token_requests += 1
        body = {"access_token": access, "expires_in": self._token_ttl_s, "token_type": "Bearer"}
        return _json(200, body)


_FIXED = (
    ("gone", 404, "NOT_FOUND", "UNREGISTERED"),
    ("err", 500, "INTERNAL", "INTERNAL"),
    ("unavail", 503, "UNAVAILABLE", "UNAVAILABLE"),
    ("mismatch", 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    ("thirdparty", 401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
)


def _message(body: bytes) -> dict[str, Any] | Response:
    """The validated message, or FCM's 400 for what it would refuse."""
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    if not isinstance(message, dict) or not isinstance(message.get("token"), str):
        return _error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.")
    data = message.get("data", {})
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        violations = tuple((f"message.data[{k}]", "Invalid value: not a string") for k in bad)
        return _error(400, "INVALID_ARGUMENT", "Invalid value in data", violations=violations)
    android = message.get("android", {})
    if android.get("priority", "HIGH") not in ("HIGH", "NORMAL"):
        return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.priority'")
    if "ttl" in android and not _TTL.match(str(android["ttl"])):
        return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'")
    return message


def _json(status: int, body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(
        status, json.dumps(body).encode(), (("content-type", "application/json"), *headers)
    )


def _error(
    status: int,
    google_status: str,
    message: str,
    fcm_code: str | None = None,
    violations: tuple[tuple[str, str], ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    details: list[dict[str, Any]] = []
    if fcm_code is not None:
        details.append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}
        )
    if violations:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": f, "description": d} for f, d in violations],
            }
        )
    error = {"code": status, "message": message, "status": google_status, "details": details}
    return _json(status, {"error": error}, headers)
