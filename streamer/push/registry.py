"""The push providers, one entry each: the one home of their names and channels.

Adding a provider is one package beside this file that exports ``PROVIDER`` (a
``streamer.push.provider.Provider``: its settings reader and its client, which builds
payloads and classifies answers) and one entry here. The event schema's channels
(``streamer.contract.event``), the settings, the factory, the markers and the metrics all
take their lists from this tuple.

The event contract imports this module, so it imports nothing from streamer and nothing
heavy; a provider's package is imported only when the worker reads its settings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    name: str  # metric label, reason prefix ("apns:BadDeviceToken"), ENABLE_<NAME>_PUSH
    channel: str  # the event's target channel: part of the event contract
    package: str  # the package that implements it

    @property
    def enable_variable(self) -> str:
        return f"ENABLE_{self.name.upper()}_PUSH"


PROVIDERS: tuple[ProviderEntry, ...] = (
    ProviderEntry("apns", "push_ios", "streamer.push.apns"),
    ProviderEntry("fcm", "push_android", "streamer.push.fcm"),
)

PUSH_CHANNEL_NAMES: tuple[str, ...] = tuple(p.channel for p in PROVIDERS)


def by_channel(channel: str) -> ProviderEntry | None:
    return next((p for p in PROVIDERS if p.channel == channel), None)
