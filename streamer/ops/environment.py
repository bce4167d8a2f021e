"""Every environment variable streamer reads: its default, what it means, who reads it.

One catalogue serves three readers: each command's ``--help`` lists the variables it reads,
``.env.example`` at the repository root is rendered from it (``python -m
streamer.ops.environment > .env.example``), and a test keeps both in step with the README's
configuration table. Pure data; no environment is read here.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    default: str  # as typed in .env; "" when there is none (or it is computed)
    meaning: str
    note: str = ""  # when the default is not a plain value: what it is


V = Variable  # short, for the table below


# Grouped as the README's table is; the group names head the sections of .env.example.
GROUPS: dict[str, tuple[Variable, ...]] = {
    "Redis and keys": (
        V("REDIS_URL", "redis://127.0.0.1:6379/0",
          "Redis to use (redis://, rediss://, unix://; a cluster: redis+cluster://h:p,h:p…)",
          "unset: the stack of `streamer up` if one runs here, else the default"),
        V("KEY_PREFIX", "notify:", "prefix of every key"),
        V("STREAM_KEY", "notify:events", "ingress stream (contract)"),
        V("CONSUMER_GROUP", "notify-workers", "worker consumer group (contract)"),
        V("INGRESS_PARTITIONS", "16", "number of ingress partitions (partition streams)"),
    ),
    "Worker": (
        V("WORKER_ID", "", "stable, unique consumer name", "default <host>-<pid>"),
        V(
            "READ_COUNT",
            "2000",
            "entries per batch: one XREADGROUP over the held streams (shared among them), "
            "or one XAUTOCLAIM",
        ),
        V("BLOCK_MS", "2000", "XREADGROUP block time (bounds shutdown latency)"),
        V("CLAIM_IDLE_MS", "30000", "pending entries idle this long are reclaimed"),
        V("MAX_DELIVERIES", "5", "deliveries before an entry is dead-lettered"),
        V("RETRY_BASE_MS", "1000", "base of the retry backoff"),
        V("WORKER_HEARTBEAT_MS", "1000", "worker heartbeat and partition-lease renewal period"),
        V("WORKER_DEAD_AFTER_MS", "5000", "a worker without heartbeat this long is dead"),
        V("WORKER_LEASE_TTL_MS", "5000", "lifetime of a partition lease not renewed"),
        V("MAX_PAYLOAD_BYTES", "65536", "larger payloads are dead-lettered (publish refuses them)"),
        V("USER_HISTORY_SIZE", "1000", "entries kept per user replay log"),
        V("USER_HISTORY_TTL_S", "86400", "idle TTL of a user replay log"),
        V("TOPIC_HISTORY_SIZE", "1000", "entries kept per topic log"),
        V("TOPIC_HISTORY_TTL_S", "86400", "idle TTL of a topic log"),
        V("BROADCASTS_PER_S", "10", "broadcast events delivered per second at most"),
        V("DEDUPE_TTL_S", "", "lifetime of the per-event dedupe keys",
          "default max(USER_HISTORY_TTL_S, 86400)"),
        V("INBOX_MAX_LEN", "100000", "approximate cap of a gateway inbox"),
        V("GATEWAY_DEAD_AFTER_MS", "15000", "a gateway without heartbeat this long is dead"),
        V("STATS_INTERVAL_S", "10", "how often the worker samples lag, pending and DLQ gauges"),
    ),
    "Gateway": (
        V("GATEWAY_PORT", "8765", "port of sockets, probes and /metrics"),
        V("GATEWAY_HOST", "0.0.0.0", "address to listen on (`streamer up`: 127.0.0.1)"),
        V("GATEWAY_ID", "", "name in ownership, heartbeat and inbox keys; keep it stable",
          "default <host>-<port>"),
        V("GATEWAY_HEARTBEAT_MS", "2000", "heartbeat period (at most half of the dead-after)"),
        V("GATEWAY_READ_COUNT", "500", "inbox entries per XREAD"),
        V("GATEWAY_BLOCK_MS", "2000", "inbox XREAD block time"),
        V("GATEWAY_REPLAY_CONCURRENCY", "32", "user-log reads for resumes in flight at once"),
        V("GATEWAY_OWNERSHIP_VERIFY_S", "30", "each ownership entry is rewritten once per period"),
        V("JWT_SECRET", "", "HS256 key, >= 32 bytes; or set JWT_PUBLIC_KEY_FILE",
          "none; `streamer up`: random"),
        V("JWT_PUBLIC_KEY_FILE", "", "PEM RSA (RS256) or P-256 EC (ES256) public key"),
        V("JWT_AUDIENCE", "", "required aud claim, when set"),
        V("JWT_ISSUER", "", "required iss claim, when set"),
        V("JWT_LEEWAY_S", "10", "clock skew allowed on exp, nbf and iat (issuer vs gateway)"),
        V("WS_ALLOWED_ORIGINS", "", "comma-separated Origin allowlist (empty: any)"),
        V("WS_MAX_REPLAY", "1000", "most events one resume (or ?history=N) sends"),
        V("WS_MAX_CLIENT_FRAME", "4096", "largest client frame in bytes (larger: close 1009)"),
        V("WS_SEND_BUFFER_BYTES", "1048576", "per-socket unsent bytes before a 4008 close"),
        V("WS_MAX_SOCKETS_PER_USER", "16", "sockets of one user per gateway (more: HTTP 429)"),
        V("WS_PING_INTERVAL_S", "20", "WebSocket keepalive ping period"),
        V("WS_PING_TIMEOUT_S", "20", "WebSocket keepalive pong timeout"),
        V("WS_CLOSE_TIMEOUT_S", "5", "how long a closing handshake may take"),
        V("WS_RESUME_WAIT_MS", "300", "how long a new socket waits for a first resume frame"),
        V("WS_MAX_TOPICS_PER_SOCKET", "64", "topic subscriptions one socket may hold"),
        V("WS_KERNEL_SEND_BUFFER_BYTES", "65536", "SO_SNDBUF of each socket (0: OS default)"),
        V("WS_HANDSHAKE_TIMEOUT_S", "10", "handshakes not done by then are dropped"),
        V("DEMO_MODE", "false", "serve GET /demo on the gateway (`streamer up`: on)"),
    ),
    "HTTP publish API": (
        V("API_PORT", "8780", "port of `streamer api`: publish routes, probes and /metrics"),
        V("API_HOST", "127.0.0.1", "address `streamer api` listens on (a container: 0.0.0.0)"),
        V("API_KEYS", "", "comma-separated API keys (>= 16 bytes each); or API_KEYS_FILE"),
        V("API_KEYS_FILE", "", "file of API keys, one a line (# comments); adds to API_KEYS"),
        V("API_MAX_BODY_BYTES", "1048576", "larger request bodies are refused with 413"),
        V("API_MAX_BATCH", "500", "most events one POST /api/publish/batch may carry"),
        V("PUBLISH_DEDUPE_TTL_S", "86400",
          "an event id published again within this window is written once (0: off)"),
    ),
    "Probes, metrics and logs": (
        V("METRICS_HOST", "0.0.0.0", "address of /metrics and probes (`streamer up`: 127.0.0.1)"),
        V("METRICS_PORT", "9100", "port of /metrics and probes of worker and bridges (0: off)",
          "worker 9100, RabbitMQ bridge 9102, Pub/Sub bridge 9103"),
        V("HEALTH_THRESHOLD_S", "30", "/healthz turns 503 when Redis was unreachable this long"),
        V("HEALTHCHECK_URL", "", "what `streamer healthcheck` probes (the image's HEALTHCHECK)",
          "default: the health URL of PID 1's process kind"),
        V("HEALTHCHECK_PID", "1", "the process whose command line names the kind to probe"),
        V("LOG_LEVEL", "info", "debug, info, warning or error"),
        V("LOG_FORMAT", "text", "text, or json for one JSON object per line"),
    ),
    "Push": (
        V("ENABLE_APNS_PUSH", "false", "deliver push_ios through APNs"),
        V("APNS_CERT_FILE", "", "the .p8 token-signing key (required with APNs)"),
        V("APNS_KEY_ID", "", "its key id (required with APNs)"),
        V("APNS_TEAM_ID", "", "the team id (required with APNs)"),
        V("APNS_TOPIC", "", "the app's bundle id, apns-topic (required with APNs)"),
        V("APNS_USE_SANDBOX", "false", "api.sandbox.push.apple.com instead of production"),
        V("APNS_ENDPOINT", "", "host:port override (tests, proxies)", "default Apple's"),
        V("ENABLE_FCM_PUSH", "false", "deliver push_android through FCM HTTP v1"),
        V("FCM_SERVICE_ACCOUNT_FILE", "", "service-account JSON key (required with FCM)"),
        V("FCM_PROJECT_ID", "", "Firebase project", "default the file's project_id"),
        V("FCM_ENDPOINT", "https://fcm.googleapis.com", "base URL override (tests, proxies)"),
        V("FCM_API_KEY", "", "legacy server key: no longer accepted"),
        V("PUSH_CA_FILE", "", "extra CA certificate to trust for APNs and FCM"),
        V("PUSH_CONCURRENCY", "256", "requests in flight per provider (HTTP/2 streams)"),
        V("PUSH_TIMEOUT_S", "10", "per provider request; then the push is retried"),
        V("PUSH_MARKER_TTL_S", "3600", "how long an accepted push is remembered"),
        V("HTTPS_PROXY", "", "an http:// proxy for APNs and FCM (CONNECT tunnel)"),
        V("NO_PROXY", "", "hosts that bypass HTTPS_PROXY"),
    ),
    "Bridges": (
        V("ENABLE_RABBITMQ_CONSUMER", "false", "`streamer up` also runs the RabbitMQ bridge"),
        V("ENABLE_REDIS_CONSUMER", "false", "`streamer up` also runs the Pub/Sub bridge"),
        V("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/", "broker of the RabbitMQ bridge"),
        V("RABBITMQ_QUEUE_NAME_AI_UPDATES", "ai_updates_notifications", "first queue consumed"),
        V("RABBITMQ_QUEUES", "", "further queues, comma-separated"),
        V("RABBITMQ_PREFETCH", "2000", "un-acked deliveries in flight; a batch is at most half"),
        V("RABBITMQ_DECLARE_QUEUES", "true", "declare durable queues; false: only check them"),
        V("BRIDGE_DEDUPE_TTL_S", "3600", "lifetime of the RabbitMQ bridge's redelivery markers"),
        V("BRIDGE_BACKOFF_BASE_MS", "200", "reconnect / retry backoff base"),
        V("BRIDGE_BACKOFF_MAX_MS", "10000", "reconnect / retry backoff cap"),
        V("BRIDGE_SHUTDOWN_GRACE_S", "10", "on SIGTERM, how long a bridge keeps retrying Redis"),
        V("REDIS_PUBSUB_CHANNEL_NAME", "general_notifications", "first channel subscribed"),
        V("REDIS_PUBSUB_CHANNELS", "", "further channels, comma-separated"),
        V("REDIS_PUBSUB_PATTERNS", "", "PSUBSCRIBE patterns, comma-separated"),
        V("REDIS_PUBSUB_URL", "", "Redis to subscribe on", "default REDIS_URL"),
        V("REDIS_PUBSUB_SHARDED", "false", "true: SSUBSCRIBE the channels (sharded, Redis 7)"),
        V("BRIDGE_BATCH_MAX", "500", "Pub/Sub messages written per round trip at most"),
        V("REDIS_PUBSUB_PING_INTERVAL_S", "10", "PING a silent subscribed connection this often"),
    ),
    "Local stack (`streamer up`, `just`)": (
        V("STREAMER_DATA_DIR", ".streamer", "where `streamer up` keeps Redis data and stack.json"),
        V("EMBEDDED_REDIS_PORT", "", "port of the embedded redis-server", "default a free port"),
        V("STREAMER_VENV", ".venv", "virtualenv the just recipes use (and create if missing)"),
    ),
}  # fmt: skip

VARIABLES: dict[str, Variable] = {v.name: v for group in GROUPS.values() for v in group}

_REDIS = ("REDIS_URL", "KEY_PREFIX", "STREAM_KEY", "CONSUMER_GROUP", "INGRESS_PARTITIONS")
_LOG = ("LOG_LEVEL", "LOG_FORMAT")
_PROBES = ("METRICS_HOST", "METRICS_PORT", "HEALTH_THRESHOLD_S")
_LOCAL = ("STREAMER_DATA_DIR",)
_BRIDGE = ("MAX_PAYLOAD_BYTES", "BRIDGE_BACKOFF_BASE_MS", "BRIDGE_BACKOFF_MAX_MS",
           "BRIDGE_SHUTDOWN_GRACE_S")  # fmt: skip


def _group(name: str, *skip: str) -> tuple[str, ...]:
    return tuple(v.name for v in GROUPS[name] if v.name not in skip)


# The variables each command reads (`streamer <command> --help` lists them).
COMMANDS: dict[str, tuple[str, ...]] = {
    "worker": (*_REDIS, *_group("Worker"), *_PROBES, *_LOG, *_group("Push"), *_LOCAL),
    "gateway": (*_REDIS, *_group("Gateway"), *_LOG, *_LOCAL),
    "bridge rabbitmq": (
        *_REDIS, *_BRIDGE, *(n for n in _group("Bridges") if n.startswith("RABBITMQ")),
        "BRIDGE_DEDUPE_TTL_S", *_PROBES, *_LOG, *_LOCAL,
    ),
    "bridge pubsub": (
        *_REDIS, *_BRIDGE, *(n for n in _group("Bridges") if n.startswith("REDIS_PUBSUB")),
        "BRIDGE_BATCH_MAX", *_PROBES, *_LOG, *_LOCAL,
    ),
    "publish": (*_REDIS, "MAX_PAYLOAD_BYTES", *_LOCAL),
    "status": (*_REDIS, *_LOCAL),
    "replay": (*_REDIS, *_LOCAL),
    "dlq": (*_REDIS, *_LOCAL),
    "partition": ("KEY_PREFIX", "INGRESS_PARTITIONS"),
    "up": (
        "REDIS_URL", "STREAMER_DATA_DIR", "EMBEDDED_REDIS_PORT", "GATEWAY_PORT", "GATEWAY_HOST",
        "METRICS_PORT", "METRICS_HOST", "JWT_SECRET", "DEMO_MODE", "ENABLE_RABBITMQ_CONSUMER",
        "ENABLE_REDIS_CONSUMER",
    ),
    "api": (
        *_REDIS, *_group("HTTP publish API"), "MAX_PAYLOAD_BYTES", "HEALTH_THRESHOLD_S", *_LOG,
        *_LOCAL,
    ),
    "token": ("JWT_SECRET",),
    "healthcheck": (
        "HEALTHCHECK_URL", "HEALTHCHECK_PID", "METRICS_PORT", "METRICS_HOST", "GATEWAY_PORT",
        "GATEWAY_HOST", "API_PORT", "API_HOST",
    ),
}  # fmt: skip


def _default(variable: Variable) -> str:
    return variable.note or (variable.default if variable.default else "none")


def help_epilog(command: str) -> str:
    """The ``--help`` section listing the variables ``command`` reads, with defaults."""
    lines = ["environment (empty = unset; see .env.example):"]
    for name in COMMANDS[command]:
        variable = VARIABLES[name]
        lines.append(f"  {name:<28} {variable.meaning} [{_default(variable)}]")
    return "\n".join(lines)


def env_example() -> str:
    """The text of .env.example: every variable, commented out, at its default."""
    out = [
        "# streamer: every environment variable it reads, with its default and meaning.",
        '# Copy to .env and uncomment what you change; an empty value means "unset" (default).',
        "# Load into a shell with: set -a; . ./.env; set +a",
        "# Generated by `python -m streamer.ops.environment` and kept in step with the README's",
        "# configuration table by tests/ops/test_environment.py.",
    ]
    for group, variables in GROUPS.items():
        out += ["", f"# --- {group} " + "-" * max(3, 84 - len(group))]
        for variable in variables:
            meaning = variable.meaning + (f" ({variable.note})" if variable.note else "")
            out += textwrap.wrap(meaning, 92, initial_indent="# ", subsequent_indent="#   ")
            out.append(f"# {variable.name}={variable.default}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(env_example())
