"""/metrics and the probes (/livez, /readyz, /healthz) of the bridges, from a daemon thread.

The bridges block on pika / redis-py in the main thread, so the asyncio endpoint of the
worker cannot run there. Responses are the same bytes (``streamer.infra.http.render``).
"""

from __future__ import annotations

import contextlib
import socketserver
import threading

from streamer.infra.http import HealthCheck, bind_error, parse_request_line, render

_MAX_HEAD_BYTES = 8192


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], health: HealthCheck) -> None:
        self.health = health
        super().__init__(address, _Handler)


class _Handler(socketserver.StreamRequestHandler):
    timeout = 5
    server: _Server

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            request_line = self.rfile.readline(_MAX_HEAD_BYTES)
            while self.rfile.readline(_MAX_HEAD_BYTES) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            method, path = parse_request_line(request_line.rstrip(b"\r\n") + b"\r\n")
            self.wfile.write(render(path, self.server.health, method))


class MetricsServer:
    def __init__(self, host: str, port: int, health: HealthCheck) -> None:
        try:
            self._server = _Server((host, port), health)
        except OSError as exc:
            raise bind_error("METRICS_PORT", host, port, exc) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
