"""Run a fake provider in its own process (benchmarks):
python -m tests.fakes apns|fcm DIR [--server lean|h2]

DIR holds credentials made by tests.fakes.certs.make_credentials (the same DIR may be
used by both). ``--server lean`` (the default) serves HTTP/2 with tests.fakes.lean_h2server,
``h2`` with the `h2` library as the tests do; FCM's token endpoint is HTTP/1.1 either way.
Prints ``port <n>`` once listening; runs until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from tests.fakes import h1server, h2server, lean_h2server
from tests.fakes.apns import FakeApns
from tests.fakes.certs import (
    APNS_KEY_ID,
    APNS_TEAM_ID,
    APNS_TOPIC,
    FCM_CLIENT_EMAIL,
    FCM_PROJECT_ID,
)
from tests.fakes.fcm import FakeFcm
from tests.fakes.h2server import Handler, ServerStats


def _handler(kind: str, directory: Path) -> Handler:
    if kind == "apns":
        public = (directory / "apns_public.pem").read_bytes()
        return FakeApns(public, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC).handle
    public = (directory / "fcm_public.pem").read_bytes()
    return FakeFcm(public, FCM_CLIENT_EMAIL, FCM_PROJECT_ID).handle


async def _main(kind: str, directory: Path, server_kind: str) -> None:
    handler = _handler(kind, directory)
    # APNs speaks HTTP/2 only; FCM HTTP/2, and HTTP/1.1 for its token endpoint.
    alpn = ("h2",) if kind == "apns" else ("h2", "http/1.1")
    fallback = h1server.http1(handler) if kind == "fcm" else None
    context = h2server.server_context(directory / "server.pem", directory / "server.key", alpn)
    http2 = lean_h2server if server_kind == "lean" else h2server
    server = await http2.serve(handler, context, ServerStats(), fallback=fallback)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read(1) or stop.set())
    await stop.wait()
    server.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes")
    parser.add_argument("kind", choices=("apns", "fcm"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--server", choices=("lean", "h2"), default="lean")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of streamer
        asyncio.run(_main(args.kind, args.directory, args.server))
    else:
        uvloop.run(_main(args.kind, args.directory, args.server))


if __name__ == "__main__":
    main(sys.argv[1:])
