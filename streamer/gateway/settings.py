"""Settings of the gateway process, read once from the environment."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env, LogSettings, RedisSettings

DEFAULT_PORT = 8765


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How handshake tokens are verified. Exactly one of ``secret``/``public_key`` is set."""

    secret: str | None
    public_key: str | None
    audience: str | None
    issuer: str | None
    leeway_s: int
    allowed_origins: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SocketSettings:
    """Per-socket limits and timings."""

    max_replay: int
    max_client_frame_bytes: int
    send_buffer_bytes: int
    max_sockets_per_user: int
    ping_interval_s: float
    ping_timeout_s: float
    close_timeout_s: float
    resume_wait_ms: int
    max_topics_per_socket: int = 64
    kernel_send_buffer_bytes: int = 65536  # SO_SNDBUF; 0 leaves the OS default
    handshake_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    redis: RedisSettings
    log: LogSettings
    auth: AuthSettings
    sockets: SocketSettings
    gateway_id: str
    host: str
    port: int
    inbox_read_count: int
    inbox_block_ms: int
    heartbeat_ms: int
    dead_after_ms: int
    replay_concurrency: int
    demo_mode: bool
    ownership_verify_s: float = 30.0

    @classmethod
    def from_env(cls, env: Env | None = None) -> GatewaySettings:
        env = env or Env()
        port = env.int("GATEWAY_PORT", DEFAULT_PORT, maximum=65535)
        heartbeat_ms = env.int("GATEWAY_HEARTBEAT_MS", 2000, minimum=50)
        dead_after_ms = env.int("GATEWAY_DEAD_AFTER_MS", 15000, minimum=100)
        if heartbeat_ms * 2 > dead_after_ms:
            raise ConfigError(
                f"GATEWAY_HEARTBEAT_MS: must be at most half of GATEWAY_DEAD_AFTER_MS "
                f"({dead_after_ms}), got {heartbeat_ms}"
            )
        return cls(
            redis=RedisSettings.from_env(env),
            log=LogSettings.from_env(env),
            auth=_auth(env),
            sockets=_sockets(env),
            gateway_id=env.optional("GATEWAY_ID") or default_gateway_id(port),
            host=env.optional("GATEWAY_HOST") or "0.0.0.0",
            port=port,
            inbox_read_count=env.int("GATEWAY_READ_COUNT", 500, minimum=1, maximum=10000),
            inbox_block_ms=env.int("GATEWAY_BLOCK_MS", 2000, minimum=1, maximum=60000),
            heartbeat_ms=heartbeat_ms,
            dead_after_ms=dead_after_ms,
            replay_concurrency=env.int("GATEWAY_REPLAY_CONCURRENCY", 32, minimum=1),
            demo_mode=env.bool("DEMO_MODE", False),
            ownership_verify_s=env.float("GATEWAY_OWNERSHIP_VERIFY_S", 30.0, minimum=0.1),
        )


def default_gateway_id(port: int) -> str:
    """Stable across restarts on one host, so a restarted gateway finds its own stale state."""
    suffix = str(port) if port else f"pid{os.getpid()}"
    return f"{socket.gethostname()}-{suffix}"


def _auth(env: Env) -> AuthSettings:
    secret = env.optional("JWT_SECRET")
    key_file = env.existing_file("JWT_PUBLIC_KEY_FILE")
    if secret is None and key_file is None:
        raise ConfigError("JWT_SECRET: set it (HS256) or JWT_PUBLIC_KEY_FILE (RS256/ES256)")
    if secret is not None and key_file is not None:
        # Accepting both would let a token choose its verification key: algorithm confusion.
        raise ConfigError("JWT_SECRET: set either JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both")
    if secret is not None and len(secret.encode()) < 32:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits).
        raise ConfigError("JWT_SECRET: must be at least 32 bytes for HS256")
    public_key = None
    if key_file is not None:
        with open(key_file, encoding="utf-8") as handle:
            public_key = handle.read()
    return AuthSettings(
        secret=secret,
        public_key=public_key,
        audience=env.optional("JWT_AUDIENCE"),
        issuer=env.optional("JWT_ISSUER"),
        # PyJWT applies it to exp, nbf and iat: a token minted by an issuer whose clock is a
        # few seconds ahead is not refused as "issued in the future".
        leeway_s=env.int("JWT_LEEWAY_S", 10, maximum=3600),
        allowed_origins=env.list("WS_ALLOWED_ORIGINS"),
    )


def _sockets(env: Env) -> SocketSettings:
    return SocketSettings(
        max_replay=env.int("WS_MAX_REPLAY", 1000, minimum=0, maximum=100000),
        max_client_frame_bytes=env.int("WS_MAX_CLIENT_FRAME", 4096, minimum=64),
        send_buffer_bytes=env.int("WS_SEND_BUFFER_BYTES", 1 << 20, minimum=1024),
        max_sockets_per_user=env.int("WS_MAX_SOCKETS_PER_USER", 16, minimum=1),
        ping_interval_s=env.float("WS_PING_INTERVAL_S", 20.0, minimum=0.1),
        ping_timeout_s=env.float("WS_PING_TIMEOUT_S", 20.0, minimum=0.1),
        close_timeout_s=env.float("WS_CLOSE_TIMEOUT_S", 5.0, minimum=0.1),
        resume_wait_ms=env.int("WS_RESUME_WAIT_MS", 300, maximum=60000),
        max_topics_per_socket=env.int("WS_MAX_TOPICS_PER_SOCKET", 64, minimum=1, maximum=10000),
        kernel_send_buffer_bytes=env.int("WS_KERNEL_SEND_BUFFER_BYTES", 65536, maximum=1 << 26),
        handshake_timeout_s=env.float("WS_HANDSHAKE_TIMEOUT_S", 10.0, minimum=0.1),
    )
