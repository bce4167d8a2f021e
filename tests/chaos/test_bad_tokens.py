"""The bad-token matrix against real gateway processes: HS256, RS256 and ES256 gateways,
every kind of bad token, carried in the query, the Authorization header and the
subprotocol. None may open a socket; each is refused with the documented status."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.chaos.drive import expect_no_crash
from tests.chaos.stack import Stack
from tests.support.gateway import SECRET, GatewayProcess, ws_url

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

USER = "alice"
OK, UNAUTHORIZED, FORBIDDEN = 101, 401, 403


@dataclass(frozen=True, slots=True)
class Signer:
    """How one gateway's issuer signs, and how an attacker might try instead."""

    algorithm: str
    key: Any  # what jwt.encode signs with
    public_pem: bytes | None  # what the gateway verifies with (None: HS256's secret)
    other_key: Any  # the same kind of key, not the gateway's

    def sign(self, claims: dict[str, Any], key: Any = None) -> str:
        return jwt.encode(claims, self.key if key is None else key, self.algorithm)


def hs256() -> Signer:
    return Signer("HS256", SECRET, None, "another-secret-0123456789abcdefghij")


def rs256() -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Signer("RS256", key, _pem(key), other)


def es256() -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return Signer("ES256", key, _pem(key), ec.generate_private_key(ec.SECP256R1()))


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    """A token built by hand: no signature, or HMAC-SHA256 with ``key`` (whatever it is)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def cases(signer: Signer) -> list[tuple[str, str | None, int]]:
    """(case, token or None for none at all, the status the handshake must get)."""
    now = int(time.time())
    good = {"sub": USER, "iat": now, "exp": now + 300}
    found: list[tuple[str, str | None, int]] = [
        ("valid", signer.sign(good), OK),
        ("expired", signer.sign({**good, "exp": now - 120}), UNAUTHORIZED),
        ("nbf beyond leeway", signer.sign({**good, "nbf": now + 3600}), UNAUTHORIZED),
        ("iat beyond leeway", signer.sign({**good, "iat": now + 3600}), UNAUTHORIZED),
        ("no exp", signer.sign({"sub": USER, "iat": now}), UNAUTHORIZED),
        ("wrong sub", signer.sign({**good, "sub": "mallory"}), FORBIDDEN),
        ("sub not a string", signer.sign({**good, "sub": 42}), UNAUTHORIZED),
        ("wrong key", signer.sign(good, signer.other_key), UNAUTHORIZED),
        ("alg none", unsigned({"alg": "none", "typ": "JWT"}, good), UNAUTHORIZED),
        ("malformed: not a JWT", "not-a-jwt", UNAUTHORIZED),
        ("malformed: three junk parts", "aaaa.bbbb.cccc", UNAUTHORIZED),
        ("malformed: truncated", signer.sign(good)[:-10], UNAUTHORIZED),
        ("malformed: header only", signer.sign(good).split(".")[0], UNAUTHORIZED),
        ("missing", None, UNAUTHORIZED),
    ]
    if signer.public_pem is not None:
        confused = unsigned({"alg": "HS256", "typ": "JWT"}, good, signer.public_pem)
        found.append(("HS256 signed with the public key", confused, UNAUTHORIZED))
    else:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        asymmetric = jwt.encode(good, rsa_key, "RS256")
        found.append(("RS256 to an HS256 gateway", asymmetric, UNAUTHORIZED))
    return found


Transport = Callable[[int, str | None], dict[str, Any]]


def by_query(port: int, token: str | None) -> dict[str, Any]:
    query = {} if token is None else {"token": quote(token, safe="")}
    return {"uri": ws_url(port, USER, **query)}


def by_header(port: int, token: str | None) -> dict[str, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return {"uri": ws_url(port, USER), "additional_headers": headers}


def by_subprotocol(port: int, token: str | None) -> dict[str, Any]:
    protocols = [] if token is None else [f"bearer.{token}"]
    return {"uri": ws_url(port, USER), "subprotocols": protocols}


TRANSPORTS: dict[str, Transport] = {
    "query": by_query,
    "header": by_header,
    "subprotocol": by_subprotocol,
}


async def handshake(options: dict[str, Any]) -> int:
    try:
        async with connect(**options, open_timeout=10):
            return OK
    except InvalidStatus as exc:
        return exc.response.status_code


def start_gateway(stack: Stack, signer: Signer, workdir: Path) -> GatewayProcess:
    gateway = stack.gateway(f"gw-{signer.algorithm.lower()}", start=False)
    if signer.public_pem is not None:
        key_file = workdir / f"{signer.algorithm}.pem"
        key_file.write_bytes(signer.public_pem)
        del gateway.env["JWT_SECRET"]
        gateway.env["JWT_PUBLIC_KEY_FILE"] = str(key_file)
    return gateway.start()


async def test_bad_token_matrix(stack: Stack, tmp_path: Path) -> None:
    """Expired, not yet valid beyond the leeway (nbf, iat), without exp, for another user,
    with a non-string sub, signed with another key, alg none, HS256 signed with the public
    key, malformed, missing: on HS256, RS256 and ES256 gateways, by query, header and
    subprotocol. Only the valid token opens a socket; every other gets its status."""
    signers = [hs256(), rs256(), es256()]
    gateways = await asyncio.gather(
        *(asyncio.to_thread(start_gateway, stack, s, tmp_path) for s in signers)
    )
    wrong: list[str] = []
    tried = accepted_bad = 0
    for signer, gateway in zip(signers, gateways, strict=True):
        for case, token, expected in cases(signer):
            for transport, options in TRANSPORTS.items():
                status = await handshake(options(gateway.port, token))
                tried += 1
                accepted_bad += status == OK and expected != OK
                if status != expected:
                    what = f"{signer.algorithm} {case} by {transport}"
                    wrong.append(f"{what}: {status}, expected {expected}")
    stack.notes.append(f"{tried} handshakes, {accepted_bad} bad tokens accepted")
    expect_no_crash(stack)
    assert not wrong, "\n".join(wrong)
