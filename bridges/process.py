"""Process entry points of the bridges: logging, signals, metrics endpoint, run, exit."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Protocol

from bridges.http import MetricsServer
from bridges.pubsub import PubSubBridge
from bridges.rabbitmq import RabbitBridge
from bridges.settings import BridgeCommon, PubSubSettings, RabbitSettings
from streamer.infra.http import HealthCheck
from streamer.infra.logs import setup_logging
from streamer.infra.redis import connect_sync
from streamer.infra.settings import default_process_id

log = logging.getLogger(__name__)


class Bridge(Protocol):
    @property
    def health(self) -> HealthCheck: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...


def run_rabbitmq(settings: RabbitSettings) -> int:
    name = f"streamer-bridge-rabbitmq-{default_process_id()}"
    client = connect_sync(settings.common.redis.url, client_name=name)
    try:
        return _run(RabbitBridge(settings, client, name), settings.common)
    finally:
        client.close()


def run_pubsub(settings: PubSubSettings) -> int:
    name = f"streamer-bridge-pubsub-{default_process_id()}"
    # The bridge pings the subscribed connection itself and checks for the reply
    # (redis-py's health check does not), see bridges.pubsub.Liveness.
    source = connect_sync(settings.source_url, client_name=name)
    sink = connect_sync(settings.common.redis.url, client_name=name)
    try:
        return _run(PubSubBridge(settings, source, sink), settings.common)
    finally:
        source.close()
        sink.close()


def _run(bridge: Bridge, common: BridgeCommon) -> int:
    setup_logging(common.log)
    # pika logs each failed connection attempt as ~7 ERROR lines and a traceback; the bridge
    # logs one warning per retry itself, so pika speaks only at LOG_LEVEL=debug.
    quiet = logging.DEBUG if common.log.level == "debug" else logging.CRITICAL
    logging.getLogger("pika").setLevel(quiet)
    _on_signals(bridge.stop)
    server = None
    if common.metrics.port:
        server = MetricsServer(common.metrics.host, common.metrics.port, bridge.health).start()
        log.info("metrics on http://%s:%d/metrics", common.metrics.host, server.port)
    try:
        bridge.run()
    finally:
        if server is not None:
            server.close()
    return 0


def _on_signals(stop: Callable[[], None]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())
