"""Build the push senders enabled by configuration (ENABLE_APNS_PUSH, ENABLE_FCM_PUSH)."""

from __future__ import annotations

from streamer.contract.event import Channel
from streamer.contract.keys import Keys
from streamer.infra.errors import ConfigError
from streamer.infra.redis import connect
from streamer.infra.settings import Env, RedisSettings
from streamer.push.apns import ApnsSender
from streamer.push.base import PushSender
from streamer.push.fcm import FcmSender
from streamer.push.marker import MarkedSender, PushMarkers
from streamer.push.settings import PushSettings


def build_push_senders(env: Env) -> dict[Channel, PushSender]:
    """Senders by channel. Disabled providers are absent (their pushes are skipped and
    counted). Enabled ones without credentials fail here, at start-up.

    Call inside the running event loop: aioapns and aiohttp bind to it.
    """
    settings = PushSettings.from_env(env)
    senders: dict[Channel, PushSender] = {}
    if settings.apns is not None:
        senders["push_ios"] = ApnsSender(settings.apns, settings)
    if settings.fcm is not None:
        try:
            senders["push_android"] = FcmSender(settings.fcm, settings)
        except ValueError as exc:  # google-auth could not load the key
            raise ConfigError(
                f"FCM_SERVICE_ACCOUNT_FILE: unusable service account: {exc}"
            ) from None
    if not senders:
        return senders
    redis_settings = RedisSettings.from_env(env)
    markers = PushMarkers(
        connect(redis_settings.url, client_name="streamer-push-markers"),
        Keys.from_settings(redis_settings),
        settings.marker_ttl_s,
    )
    return {channel: MarkedSender(sender, markers) for channel, sender in senders.items()}
