"""Every Prometheus metric of streamer, in one place.

Names follow ``streamer_<subsystem>_<name>_<unit|total>``. Labels are bounded: channel,
outcome, reason, close code, provider, bridge, component. Never user ids, tokens or event ids.

Every metric lives in the default registry (in-process tests read it there), but a process
*exposes* only the metrics it owns: ``register(component)`` at start-up picks them by
subsystem (a gateway never exports the worker's stream lag as a misleading 0) and adds
``streamer_build_info{component, version} 1``, the series alerts and dashboards use to find
each process kind without depending on scrape job names.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --- worker -------------------------------------------------------------------------------
EVENTS_CONSUMED = Counter(
    "streamer_worker_events_consumed_total",
    "Stream entries read by this worker, by source (new or reclaimed).",
    ["source"],
)
DELIVERIES = Counter(
    "streamer_worker_deliveries_total",
    "Channel deliveries attempted, by channel and outcome.",
    ["channel", "outcome"],
)
DEAD_LETTERED = Counter(
    "streamer_worker_dead_lettered_total", "Entries moved to the dead-letter stream.", ["reason"]
)
ACKED = Counter("streamer_worker_acked_total", "Stream entries acknowledged.")
RECLAIMED = Counter(
    "streamer_worker_reclaimed_total", "Pending entries reclaimed from idle consumers (XAUTOCLAIM)."
)
TRIMMED_PENDING = Counter(
    "streamer_worker_trimmed_pending_total",
    "Pending entries that were trimmed from the stream before processing; acked.",
)
DUPLICATES = Counter(
    "streamer_worker_duplicates_total",
    "Redelivered events already in the user log (deduplicated).",
)
GROUP_RECREATED = Counter(
    "streamer_worker_group_recreated_total",
    "Consumer group (re)created because Redis did not have it.",
)
INBOX_APPENDS = Counter(
    "streamer_worker_inbox_appends_total", "Deliveries appended to gateway inboxes."
)
ROUTED = Counter(
    "streamer_worker_routed_total",
    "Entries forwarded to the partition that owns their user or topic (from the "
    "compatibility stream, or for events with targets in several partitions).",
)
BROADCASTS = Counter(
    "streamer_worker_broadcasts_total", "Broadcast events written to every live gateway."
)
PARTITIONS_OWNED = Gauge(
    "streamer_worker_owned_partitions",
    "Units held now: ingress partitions, and the compatibility stream (counted as one).",
)
LEASE_CHANGES = Counter(
    "streamer_worker_lease_changes_total",
    "Units taken, released or lost by this worker, by change.",
    ["change"],
)
STALE_OWNERS_REMOVED = Counter(
    "streamer_worker_stale_owners_removed_total",
    "Ownership entries of dead gateways removed by workers.",
)
DELIVERY_LATENCY = Histogram(
    "streamer_worker_delivery_latency_seconds",
    "From the stream entry's timestamp to delivery, by channel.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
BATCH_DURATION = Histogram(
    "streamer_worker_batch_duration_seconds",
    "Time to process one batch read from the stream.",
    buckets=LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter(
    "streamer_worker_redis_errors_total", "Redis errors seen by the worker loop."
)

# --- stream (sampled by the worker) --------------------------------------------------------
STREAM_LENGTH = Gauge("streamer_stream_length_entries", "Entries in the ingress stream.")
STREAM_LAG = Gauge(
    "streamer_stream_lag_entries", "Entries not yet delivered to the consumer group."
)
STREAM_PENDING = Gauge(
    "streamer_stream_pending_entries", "Entries delivered to the group but not yet acked."
)
DLQ_LENGTH = Gauge("streamer_stream_dlq_entries", "Entries in the dead-letter stream.")
OLDEST_PENDING_AGE = Gauge(
    "streamer_stream_oldest_pending_age_seconds",
    "Age of the oldest entry delivered to the group but not yet acked (0 when none).",
)

# --- gateway -------------------------------------------------------------------------------
SOCKETS_OPEN = Gauge("streamer_gateway_open_sockets", "WebSocket connections open now.")
SOCKETS_OPENED = Counter("streamer_gateway_sockets_opened_total", "WebSocket connections accepted.")
SOCKETS_CLOSED = Counter(
    "streamer_gateway_sockets_closed_total",
    "WebSocket connections closed, by close code.",
    ["code"],
)
HANDSHAKES_REJECTED = Counter(
    "streamer_gateway_handshakes_rejected_total",
    "Handshakes refused, by HTTP status.",
    ["status"],
)
MESSAGES_SENT = Counter(
    "streamer_gateway_messages_sent_total", "Event frames sent to sockets (live and replayed)."
)
REPLAYS = Counter(
    "streamer_gateway_replays_total", "Resume requests, by recovered true/false.", ["recovered"]
)
REPLAYED_EVENTS = Counter(
    "streamer_gateway_replayed_events_total", "Events sent to sockets from the user log on resume."
)
SLOW_CLIENT_CLOSES = Counter(
    "streamer_gateway_slow_client_closes_total", "Sockets closed (4008) for not reading."
)
TOPIC_REFUSALS = Counter(
    "streamer_gateway_topic_refusals_total",
    "Topic subscriptions refused, by reason (forbidden, invalid, too_many, unavailable).",
    ["reason"],
)
BROADCAST_FRAMES = Counter(
    "streamer_gateway_broadcasts_total", "Broadcast events handed to this gateway's sockets."
)
INBOX_ENTRIES = Counter(
    "streamer_gateway_inbox_entries_total",
    "Deliveries read from this gateway's inbox (a worker writes all of a batch's in one entry).",
)
GATEWAY_DELIVERY_LATENCY = Histogram(
    "streamer_gateway_delivery_latency_seconds",
    "From the ingress entry's timestamp to the frame being handed to the socket.",
    buckets=LATENCY_BUCKETS,
)

# --- bridges -------------------------------------------------------------------------------
BRIDGED = Counter(
    "streamer_bridge_messages_bridged_total", "Messages written to the stream.", ["bridge"]
)
BRIDGE_REJECTED = Counter(
    "streamer_bridge_messages_rejected_total", "Invalid messages rejected.", ["bridge", "reason"]
)
BRIDGE_DUPLICATES = Counter(
    "streamer_bridge_duplicates_skipped_total",
    "Redelivered messages already in the stream.",
    ["bridge"],
)
BRIDGE_RECONNECTS = Counter(
    "streamer_bridge_reconnects_total", "Reconnections, by bridge and peer.", ["bridge", "peer"]
)
BRIDGE_BATCH_DURATION = Histogram(
    "streamer_bridge_batch_duration_seconds",
    "Time to write and ack one batch.",
    ["bridge"],
    buckets=LATENCY_BUCKETS,
)

# --- HTTP publish API ----------------------------------------------------------------------
API_REQUESTS = Counter(
    "streamer_api_requests_total",
    "HTTP requests answered, by route (its path template; other for unknown paths) and status.",
    ["route", "status"],
)
API_EVENTS = Counter(
    "streamer_api_events_published_total",
    "Events accepted, by outcome (written, or duplicate: its id was published inside the "
    "idempotency window, nothing written).",
    ["outcome"],
)
API_LATENCY = Histogram(
    "streamer_api_request_duration_seconds",
    "Time to answer an HTTP request, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)

# --- push ----------------------------------------------------------------------------------
PUSHES = Counter(
    "streamer_push_sent_total", "Push requests, by provider and outcome.", ["provider", "outcome"]
)
PUSH_LATENCY = Histogram(
    "streamer_push_request_duration_seconds",
    "Provider request latency.",
    ["provider"],
    buckets=LATENCY_BUCKETS,
)
PUSH_DEAD_TOKENS = Counter(
    "streamer_push_dead_tokens_total", "Device tokens reported dead.", ["provider"]
)
PUSH_CREDENTIAL_REFRESHES = Counter(
    "streamer_push_credential_refreshes_total",
    "Provider JWT / OAuth token refreshes.",
    ["provider"],
)
PUSH_CONFIG_ERRORS = Counter(
    "streamer_push_config_errors_total",
    "Provider answers that mean our configuration is wrong.",
    ["provider", "reason"],
)

# --- every process -------------------------------------------------------------------------
BUILD_INFO = Gauge(
    "streamer_build_info",
    "Always 1; labels say which process kind (component) and streamer version this is.",
    ["component", "version"],
)

# The subsystems each process kind owns. The push senders run inside the worker.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "worker": ("streamer_worker_", "streamer_stream_", "streamer_push_"),
    "gateway": ("streamer_gateway_",),
    "bridge-rabbitmq": ("streamer_bridge_",),
    "bridge-pubsub": ("streamer_bridge_",),
    "api": ("streamer_api_",),
}

_exposed: CollectorRegistry = REGISTRY  # until register(): everything (tests, tools)


def owned(component: str) -> list[MetricWrapperBase]:
    """The metrics of this module that ``component`` exports."""
    prefixes = COMPONENTS[component]
    found = [v for v in globals().values() if isinstance(v, MetricWrapperBase)]
    return [m for m in found if m._name.startswith(prefixes)]


def version() -> str:
    try:
        return metadata.version("streamer")
    except metadata.PackageNotFoundError:
        return "unknown"


def register(component: str) -> CollectorRegistry:
    """Expose, from now on, only ``component``'s metrics, its build info and the process and
    runtime metrics. Called once by each process kind at start-up."""
    global _exposed
    registry = CollectorRegistry()
    collectors: list[Collector] = [*owned(component), BUILD_INFO]
    collectors += [PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR]
    for collector in collectors:
        registry.register(collector)
    BUILD_INFO.labels(component, version()).set(1)
    _exposed = registry
    return registry


def expose_everything() -> None:
    """Back to exposing the whole default registry (tools, tests)."""
    global _exposed
    _exposed = REGISTRY


def exposition() -> bytes:
    """The Prometheus text of what this process exposes."""
    return generate_latest(_exposed)
