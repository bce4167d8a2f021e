"""Unit tests of the gateway's pure core: tokens, resume decisions, paths and frames."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from streamer.contract.ids import format_id
from streamer.gateway.auth import Credentials, Denied, Granted, TokenVerifier, find_credentials
from streamer.gateway.resume import Frame, merge, plan_resume
from streamer.gateway.settings import AuthSettings, GatewaySettings
from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env

SECRET = "unit-test-secret-0123456789abcdef0123"


def _auth(secret: str | None = SECRET, public_key: str | None = None, **kw: Any) -> AuthSettings:
    fields: dict[str, Any] = {
        "audience": None,
        "issuer": None,
        "leeway_s": 0,
        "allowed_origins": (),
    }
    fields.update(kw)
    return AuthSettings(secret=secret, public_key=public_key, **fields)


def _claims(sub: str = "u1", ttl_s: int = 60, **extra: Any) -> dict[str, Any]:
    return {"sub": sub, "exp": int(time.time()) + ttl_s, **extra}


def _verify(verifier: TokenVerifier, token: str, user: str = "u1") -> Granted | Denied:
    return verifier.verify(Credentials(token, None), user)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, as an attacker would: unsigned or HMAC-signed with any key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return f"{signing_input}."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def test_credentials_come_from_header_then_query_then_subprotocol() -> None:
    """The Authorization header wins over ?token=, which wins over a bearer.<token> subprotocol."""
    offered = ["notify.v1", "bearer.sub-token"]
    assert find_credentials("Bearer head", "query", offered) == Credentials("head", None)
    assert find_credentials("Basic abc", "query", offered) == Credentials("query", None)
    assert find_credentials(None, None, offered) == Credentials("sub-token", "bearer.sub-token")
    assert find_credentials(None, None, ["bearer."]) is None


def test_hs256_token_matrix() -> None:
    """Only a well-signed, unexpired HS256 token whose sub is the path user is granted."""
    verifier = TokenVerifier(_auth())
    good = jwt.encode(_claims(), SECRET, "HS256")
    assert isinstance(_verify(verifier, good), Granted)
    cases = {
        "missing": None,
        "malformed": "not.a.jwt",
        "expired": jwt.encode(_claims(ttl_s=-5), SECRET, "HS256"),
        "wrong signature": jwt.encode(_claims(), SECRET + "x", "HS256"),
        "alg none": _handmade({"alg": "none", "typ": "JWT"}, _claims(), None),
        "no exp": jwt.encode({"sub": "u1"}, SECRET, "HS256"),
        "numeric sub": jwt.encode({"sub": 1, "exp": _claims()["exp"]}, SECRET, "HS256"),
    }
    for name, token in cases.items():
        creds = None if token is None else Credentials(token, None)
        verdict = verifier.verify(creds, "u1")
        assert isinstance(verdict, Denied) and verdict.status == 401, name
    assert _verify(verifier, good, user="u2") == Denied(403, "wrong_user")


def test_rs256_rejects_algorithm_confusion(rsa_pair: tuple[Any, str]) -> None:
    """With a public key, RS256 is accepted and an HS256 token keyed with that public key is not."""
    private, public_pem = rsa_pair
    verifier = TokenVerifier(_auth(secret=None, public_key=public_pem))
    assert verifier.algorithm == "RS256"
    assert isinstance(_verify(verifier, jwt.encode(_claims(), private, "RS256")), Granted)
    confused = _handmade({"alg": "HS256", "typ": "JWT"}, _claims(), public_pem.encode())
    assert _verify(verifier, confused) == Denied(401, "invalid_token")


def test_es256_key_and_audience_issuer() -> None:
    """An EC P-256 key selects ES256; audience and issuer are enforced when configured."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = TokenVerifier(_auth(None, pem.decode(), audience="notify", issuer="auth"))
    ok = jwt.encode(_claims(aud="notify", iss="auth"), private, "ES256")
    assert isinstance(_verify(verifier, ok), Granted)
    wrong_aud = jwt.encode(_claims(aud="other", iss="auth"), private, "ES256")
    assert _verify(verifier, wrong_aud) == Denied(401, "invalid_token")


def test_auth_settings_fail_naming_the_variable(tmp_path: Path) -> None:
    """No key, a short secret, or both kinds of key fail at start-up naming the variable."""
    base = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        GatewaySettings.from_env(Env(base))
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        GatewaySettings.from_env(Env({**base, "JWT_SECRET": "short"}))
    key_file = tmp_path / "key.pem"
    key_file.write_text("not a key")
    with pytest.raises(ConfigError, match="not both"):
        GatewaySettings.from_env(
            Env({**base, "JWT_SECRET": SECRET, "JWT_PUBLIC_KEY_FILE": str(key_file)})
        )
    settings = GatewaySettings.from_env(Env({**base, "JWT_PUBLIC_KEY_FILE": str(key_file)}))
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY_FILE"):
        TokenVerifier(settings.auth)


def _frames(*ids: tuple[int, int]) -> list[Frame]:
    return [Frame(sid, format_id(sid).encode()) for sid in ids]


def test_resume_is_recovered_only_when_the_id_is_still_in_the_log() -> None:
    """Recovered iff the first fetched entry is the requested id and the rest fits the cap."""
    log = _frames((1, 0), (2, 0), (3, 0))
    plan = plan_resume((1, 0), log, max_replay=10)
    assert plan.recovered and [f.sid for f in plan.replay] == [(2, 0), (3, 0)]
    assert plan.floor == (1, 0)
    trimmed = plan_resume((0, 5), log, max_replay=10)
    assert not trimmed.recovered and trimmed.replay == () and trimmed.floor is None
    assert not plan_resume((1, 0), [], max_replay=10).recovered
    assert not plan_resume(None, log, max_replay=10).recovered
    assert not plan_resume((1, 0), log, max_replay=1).recovered
    assert plan_resume((1, 0), log, max_replay=2).recovered


def test_merge_orders_dedupes_and_drops_at_or_below_floor() -> None:
    """Replay and buffered live frames merge by id: ordered, once each, none at or below floor."""
    replay = _frames((2, 0), (3, 0), (4, 0))
    live = _frames((4, 0), (5, 0), (1, 0), (3, 0))
    merged = merge([*replay, *live], floor=(1, 0))
    assert [f.sid for f in merged] == [(2, 0), (3, 0), (4, 0), (5, 0)]
    assert [f.sid for f in merge(live, None)] == [(1, 0), (3, 0), (4, 0), (5, 0)]


def test_default_leeway_covers_issuer_clock_skew_on_iat_nbf_and_exp() -> None:
    """With the default JWT_LEEWAY_S (10 s): a token issued 3 s "in the future" (the issuer's
    clock ahead) or not valid for 3 more seconds is accepted, and so is one that expired 5 s
    ago; 30 s beyond any of these is refused."""
    env = {"JWT_SECRET": SECRET, "REDIS_URL": "redis://127.0.0.1:1/0"}
    verifier = TokenVerifier(GatewaySettings.from_env(Env(env)).auth)
    now = int(time.time())
    accepted = [
        _claims(iat=now + 3),
        _claims(nbf=now + 3, iat=now + 3),
        {"sub": "u1", "exp": now - 5},
    ]
    refused = [
        _claims(iat=now + 30),
        _claims(nbf=now + 30),
        {"sub": "u1", "exp": now - 30},
    ]
    for claims in accepted:
        assert isinstance(_verify(verifier, jwt.encode(claims, SECRET, "HS256")), Granted), claims
    for claims in refused:
        assert isinstance(_verify(verifier, jwt.encode(claims, SECRET, "HS256")), Denied), claims
