"""TLS for provider connections: the system's CAs, plus PUSH_CA_FILE when given."""

from __future__ import annotations

import ssl


def client_context(ca_file: str | None, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A verifying client context. The extra CA lets tests and TLS-intercepting proxies
    stand in for Apple and Google without turning verification off."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
