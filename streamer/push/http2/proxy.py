"""HTTP CONNECT tunnels (RFC 9110 §9.3.6) through an egress proxy (HTTPS_PROXY), so the
push connections work where only a proxy reaches the internet. TLS runs end to end inside
the tunnel: the proxy sees the provider's name, never the traffic."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
import urllib.request
from dataclasses import dataclass

from streamer.infra.errors import ConfigError

MAX_ANSWER_BYTES = 16_384


class ProxyError(OSError):
    """The proxy refused or broke the tunnel."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None  # Proxy-Authorization, from user:password in the URL


def proxy_from_url(url: str) -> Proxy:
    """An ``http://[user:password@]host[:port]`` proxy. Raises ValueError for others."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// proxy URL, got {url!r}")
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        authorization = f"Basic {credentials}"
    return Proxy(parts.hostname, parts.port or 80, authorization)


def connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def tunnel_status(head: bytes) -> int:
    """The status code of the proxy's answer head (up to the blank line)."""
    status_line = head.split(b"\r\n", 1)[0].split()
    if (
        len(status_line) < 2
        or not status_line[0].startswith(b"HTTP/")
        or not status_line[1].isdigit()
    ):
        raise ProxyError(f"not an HTTP answer from the proxy: {head[:80]!r}")
    return int(status_line[1])


class _Tunnel(asyncio.Protocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._head = bytearray()

    def data_received(self, data: bytes) -> None:
        self._head += data
        if self.answer.done():
            return
        if b"\r\n\r\n" in self._head:
            try:
                self.answer.set_result(tunnel_status(bytes(self._head)))
            except ProxyError as exc:
                self.answer.set_exception(exc)
        elif len(self._head) > MAX_ANSWER_BYTES:
            self.answer.set_exception(ProxyError("the proxy's answer has no end"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyError(f"the proxy closed the connection: {exc}"))


async def open_tunnel(proxy: Proxy, host: str, port: int) -> asyncio.Transport:
    """A TCP transport to host:port through the proxy, ready for TLS."""
    loop = asyncio.get_running_loop()
    transport, tunnel = await loop.create_connection(_Tunnel, proxy.host, proxy.port)
    try:
        transport.write(connect_request(proxy, host, port))
        status = await tunnel.answer
        if status != 200:
            raise ProxyError(f"the proxy answered CONNECT with {status}")
    except BaseException:
        transport.abort()
        raise
    return transport


def proxy_for(host: str, port: int) -> Proxy | None:
    """The proxy for https://host:port from HTTPS_PROXY / NO_PROXY (as curl and urllib read
    them), read once per client rather than per request. Raises ConfigError for a proxy URL
    this client cannot use."""
    if urllib.request.proxy_bypass(f"{host}:{port}") or urllib.request.proxy_bypass(host):
        return None
    url = urllib.request.getproxies().get("https")
    if url is None:
        return None
    try:
        return proxy_from_url(url)
    except ValueError as exc:
        raise ConfigError(f"HTTPS_PROXY: {exc}") from None
