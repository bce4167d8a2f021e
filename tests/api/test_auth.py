"""The API-key check, pure: the header's shape, and a comparison over every key."""

from __future__ import annotations

from streamer.api.auth import authorized, presented_key

KEYS = (b"first-key-0123456789", b"second-key-0123456789")


def test_the_key_is_read_from_an_apikey_header_only() -> None:
    """`apikey <key>` in any case of the scheme; anything else presents no key."""
    assert presented_key("apikey abc") == b"abc"
    assert presented_key("  APIKEY   abc ") == b"abc"
    for header in (None, "", "apikey", "apikey ", "Bearer abc", "apikeyabc", "apikey a b"):
        assert presented_key(header) is None, header


def test_any_configured_key_is_accepted_and_nothing_else() -> None:
    """Either key passes; a prefix, an extension or another key does not."""
    assert authorized("apikey first-key-0123456789", KEYS)
    assert authorized("apikey second-key-0123456789", KEYS)
    for key in ("first-key-012345678", "first-key-01234567890", "third-key-0123456789"):
        assert not authorized(f"apikey {key}", KEYS), key
    assert not authorized(None, KEYS)
    assert not authorized("apikey first-key-0123456789", ())
