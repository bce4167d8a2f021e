"""The APNs provider JWT: minted when due, shared, refreshed once per burst. No I/O."""

from __future__ import annotations

import jwt
import pytest

from streamer.infra.settings import Env
from streamer.push.apns.settings import ApnsSettings, read_settings
from streamer.push.apns.token import ProviderToken, jwt_due
from streamer.push.settings import Problems
from tests.fakes.certs import APNS_KEY_ID, APNS_TEAM_ID, PushCredentials, make_credentials


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> tuple[ApnsSettings, PushCredentials]:
    credentials = make_credentials(tmp_path_factory.mktemp("apns-token"))
    env = {
        "APNS_CERT_FILE": str(credentials.apns_key_file),
        "APNS_KEY_ID": APNS_KEY_ID,
        "APNS_TEAM_ID": APNS_TEAM_ID,
        "APNS_TOPIC": "com.creativeflow.app",
    }
    read = read_settings(Env(env), Problems())
    assert read is not None
    return read, credentials


def test_jwt_is_due_only_when_missing_old_or_from_the_future() -> None:
    """Reused for 40 minutes, re-minted after, or when the clock went back."""
    assert jwt_due(None, 1000.0)
    assert not jwt_due(1000.0, 1000.0 + 39 * 60)
    assert jwt_due(1000.0, 1000.0 + 40 * 60)
    assert jwt_due(1000.0, 999.0)


def test_one_jwt_serves_many_requests_and_a_burst_of_refusals_mints_one(
    settings: tuple[ApnsSettings, PushCredentials],
) -> None:
    """Apple's ExpiredProviderToken for the JWT in use, five times at once: one new JWT."""
    apns, credentials = settings
    now = [1_700_000_000.0]
    mints: list[int] = []
    token = ProviderToken(apns, lambda: mints.append(1), lambda: now[0])
    first = token.header()
    now[0] += 600
    assert token.header() == first
    assert {token.refresh(first) for _ in range(5)} == {token.header()}
    second = token.header()
    assert second != first and len(mints) == 2
    raw = second.decode().removeprefix("bearer ")
    claims = jwt.decode(
        raw, credentials.apns_public_pem, algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims == {"iss": APNS_TEAM_ID, "iat": 1_700_000_600}
    assert jwt.get_unverified_header(raw)["kid"] == APNS_KEY_ID
