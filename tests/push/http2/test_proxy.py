"""Proxy settings and the CONNECT exchange, without sockets."""

from __future__ import annotations

import pytest

from streamer.infra.errors import ConfigError
from streamer.push.http2.proxy import (
    Proxy,
    ProxyError,
    connect_request,
    proxy_for,
    proxy_from_url,
    tunnel_status,
)


def test_a_proxy_url_gives_host_port_and_basic_credentials() -> None:
    """user:password in the URL become Proxy-Authorization; the port defaults to 80."""
    assert proxy_from_url("http://proxy.internal:3128") == Proxy("proxy.internal", 3128)
    assert proxy_from_url("http://u%40x:p@proxy") == Proxy("proxy", 80, "Basic dUB4OnA=")
    with pytest.raises(ValueError, match="http://"):
        proxy_from_url("https://proxy.internal:3128")


def test_the_proxy_comes_from_https_proxy_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY applies unless NO_PROXY exempts the provider; none set, no proxy."""
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("fcm.googleapis.com", 443) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.apple.com")
    assert proxy_for("fcm.googleapis.com", 443) == Proxy("proxy.internal", 3128)
    assert proxy_for("api.push.apple.com", 443) is None
    assert proxy_for("127.0.0.1", 8443) is None
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")
    with pytest.raises(ConfigError, match=r"^HTTPS_PROXY: "):
        proxy_for("fcm.googleapis.com", 443)


def test_the_connect_request_and_the_proxy_answer() -> None:
    """CONNECT names host:port (IPv6 bracketed); the answer's status line is read."""
    assert connect_request(Proxy("p", 1, "Basic x"), "::1", 443) == (
        b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nProxy-Authorization: Basic x\r\n\r\n"
    )
    assert tunnel_status(b"HTTP/1.1 200 Connection established\r\n\r\n") == 200
    with pytest.raises(ProxyError):
        tunnel_status(b"SSH-2.0-OpenSSH\r\n\r\n")
