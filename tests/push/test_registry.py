"""The provider registry is the one home of push channels: the event contract, the
settings, the factory, the markers and the metrics take their lists from it."""

from __future__ import annotations

import json

import msgspec
import pytest

from streamer.contract.decode import SCHEMA, decode_payload
from streamer.contract.event import CHANNELS, PUSH_CHANNELS, payload_decoder
from streamer.push.provider import Provider, load
from streamer.push.registry import PROVIDERS, by_channel


def test_the_event_channels_are_the_websocket_and_one_per_registered_provider() -> None:
    """CHANNELS and PUSH_CHANNELS come from the registry, in its order."""
    assert PUSH_CHANNELS == tuple(p.channel for p in PROVIDERS) == ("push_ios", "push_android")
    assert ("websocket", *PUSH_CHANNELS) == CHANNELS


@pytest.mark.parametrize("channel", ["push_web", "PUSH_IOS", ""])
def test_the_channel_set_stays_closed_in_the_schema(channel: str) -> None:
    """A channel no provider registered is a schema error (dead-lettered), as before."""
    raw = json.dumps({"user_id": "u", "event_type": "e", "target_channels": [channel]}).encode()
    assert decode_payload(raw, 65536)[0] == SCHEMA
    with pytest.raises(msgspec.ValidationError):
        payload_decoder.decode(raw)


def test_every_registered_channel_is_accepted() -> None:
    """Each provider's channel decodes."""
    raw = json.dumps({"user_id": "u", "event_type": "e", "target_channels": list(CHANNELS)})
    assert payload_decoder.decode(raw.encode()).channels() == CHANNELS


def test_each_entry_names_a_package_that_declares_its_provider() -> None:
    """One entry plus one package: the package exports PROVIDER; names stay unique."""
    for entry in PROVIDERS:
        assert isinstance(load(entry), Provider)
        assert by_channel(entry.channel) is entry
        assert entry.enable_variable == f"ENABLE_{entry.name.upper()}_PUSH"
    assert len({p.name for p in PROVIDERS}) == len({p.channel for p in PROVIDERS}) == 2
    assert by_channel("websocket") is None
