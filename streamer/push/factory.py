"""Build the push senders of the enabled providers (ENABLE_<PROVIDER>_PUSH), from the registry."""

from __future__ import annotations

from streamer.contract.event import Channel
from streamer.contract.keys import Keys
from streamer.infra.redis import connect
from streamer.infra.settings import Env, RedisSettings
from streamer.push.base import PushSender
from streamer.push.marker import MarkedSender, PushMarkers
from streamer.push.observe import PushObserver
from streamer.push.provider import load
from streamer.push.registry import PROVIDERS
from streamer.push.sender import HttpPushSender
from streamer.push.settings import PushSettings


def build_push_senders(env: Env) -> dict[Channel, PushSender]:
    """Senders by channel. Disabled providers are absent (their pushes are skipped and
    counted). Enabled ones without credentials fail here, at start-up, with one ConfigError
    naming every missing variable.

    Call inside the running event loop: the HTTP/2 clients bind to it.
    """
    settings = PushSettings.from_env(env)
    senders: dict[Channel, PushSender] = {}
    for entry in PROVIDERS:
        if entry.name not in settings.providers:
            continue
        observer = PushObserver(entry.name)
        client = load(entry).client(
            settings.providers[entry.name], settings, observer.credential_refreshed
        )
        senders[entry.channel] = HttpPushSender(entry, client, settings, observer)
    if not senders:
        return senders
    redis_settings = RedisSettings.from_env(env)
    markers = PushMarkers(
        connect(redis_settings.url, client_name="streamer-push-markers"),
        Keys.from_settings(redis_settings),
        settings.marker_ttl_s,
    )
    return {
        channel: MarkedSender(sender, markers, settings.timeout_s)
        for channel, sender in senders.items()
    }
