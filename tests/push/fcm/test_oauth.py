"""The FCM access token's life cycle. No I/O."""

from __future__ import annotations

from streamer.push.fcm.oauth import TokenState, token_state


def test_the_token_refreshes_in_the_background_before_it_expires() -> None:
    """Fresh until 5 minutes before expiry, then refreshed behind; expired means wait."""
    assert token_state(None, 0.0, 300) is TokenState.EXPIRED
    assert token_state(3600.0, 3000.0, 300) is TokenState.FRESH
    assert token_state(3600.0, 3400.0, 300) is TokenState.REFRESH_SOON
    assert token_state(3600.0, 3600.0, 300) is TokenState.EXPIRED
