"""Build the push senders enabled by configuration (ENABLE_APNS_PUSH, ENABLE_FCM_PUSH)."""

from __future__ import annotations

from streamer.push.base import PushSender
from streamer.schemas import Channel
from streamer.settings import Env


def build_push_senders(env: Env) -> dict[Channel, PushSender]:
    """Senders by channel. Disabled providers are absent (their pushes are skipped and
    counted). Enabled ones without credentials fail here, at start-up."""
    senders: dict[Channel, PushSender] = {}
    return senders
