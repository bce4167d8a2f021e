"""A TCP proxy a test puts between a process and a server to break the network between them.

Faults, from mild to nasty:
- ``cut()``: close every open connection (both peers see the close, as when a broker or a
  load balancer drops them); new connections are still accepted.
- ``freeze()`` / ``thaw()``: forward nothing, then everything that waited (a silent peer
  that comes back: a paused VM, a congested link). Nothing is lost.
- ``blackhole()``: drop every byte on every connection, open or new, and never close one (a
  partition: no data, no FIN, no RST). Keepalive probes are answered by the proxy's kernel,
  as by a NAT holding the flow, so only a reply timeout can tell such a connection is dead.
- ``heal()``: after a black hole, connections made from now on work again; those made
  before stay black-holed and open for good (half-open), as after a partition that ended
  while the flow state on one side was lost.

One thread per direction per connection: the proxies in these tests carry a handful of
connections each.
"""

from __future__ import annotations

import contextlib
import socket
import threading

_CHUNK = 65536
_CONNECT_TIMEOUT_S = 5.0


class _Link:
    """One proxied connection: the client's socket and ours to the target (None when the
    connection was made inside a black hole and never reached the target)."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.dropping = upstream is None

    def sockets(self) -> list[socket.socket]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target_host:target_port`` until a fault is injected."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._dropping_new = False
        self.accepted = 0
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            link = self._open(client)
            if link is None:
                continue
            with self._lock:
                self._links.append(link)
                self.accepted += 1
            self._pump(link, link.client, link.upstream)
            if link.upstream is not None:
                self._pump(link, link.upstream, link.client)

    def _open(self, client: socket.socket) -> _Link | None:
        if self._dropping_new:
            return _Link(client, None)
        try:
            upstream = socket.create_connection(self._target, timeout=_CONNECT_TIMEOUT_S)
        except OSError:
            client.close()  # the target refused: so does the proxy
            return None
        upstream.settimeout(None)
        return _Link(client, upstream)

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket | None) -> None:
        threading.Thread(
            target=_pump, args=(link, source, sink, self._flowing), name="proxy-pump", daemon=True
        ).start()

    def cut(self) -> int:
        """Close every open connection; returns how many there were."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            for s in link.sockets():
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        return len(links)

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def blackhole(self) -> None:
        """Drop all traffic on open and new connections; close nothing."""
        self._dropping_new = True
        with self._lock:
            for link in self._links:
                link.dropping = True

    def heal(self) -> None:
        """New connections work again; the black-holed ones stay open and dead."""
        self._dropping_new = False

    def close(self) -> None:
        self._listener.close()
        self.thaw()
        self.cut()


def _pump(
    link: _Link, source: socket.socket, sink: socket.socket | None, flowing: threading.Event
) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(_CHUNK):
            flowing.wait()
            if link.dropping or sink is None:
                continue  # into the black hole
            sink.sendall(data)
    if link.dropping:
        return  # a partition carries no FIN either: the other side stays half-open
    for s in link.sockets():
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
