"""Run a fake provider in its own process (benchmarks): python -m tests.fakes apns|fcm DIR

DIR holds credentials made by tests.fakes.certs.make_credentials (the same DIR may be
used by both). Prints ``port <n>`` once listening; runs until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import sys
from pathlib import Path

import hpack.hpack

from tests.fakes import h1server, h2server
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


def _remember_huffman_decoding() -> None:
    """The fake APNs decodes the same Huffman-coded provider JWT on every request (HTTP/2
    sends it never-indexed); in this process only, recent decodings are remembered. hpack's
    decoder is pure, so answers are unchanged; the tests' in-thread fakes share the client's
    process and keep hpack as it is."""
    decode = hpack.hpack.decode_huffman
    hpack.hpack.decode_huffman = functools.lru_cache(maxsize=256)(decode)


def _handler(kind: str, directory: Path) -> Handler:
    if kind == "apns":
        public = (directory / "apns_public.pem").read_bytes()
        return FakeApns(public, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC).handle
    public = (directory / "fcm_public.pem").read_bytes()
    return FakeFcm(public, FCM_CLIENT_EMAIL, FCM_PROJECT_ID).handle


async def _main(kind: str, directory: Path) -> None:
    # APNs speaks HTTP/2 only; the FCM sender uses HTTP/1.1 (streamer.push.fcm).
    http = h2server if kind == "apns" else h1server
    context = http.server_context(directory / "server.pem", directory / "server.key")
    server = await http.serve(_handler(kind, directory), context, ServerStats())
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
    args = parser.parse_args(argv)
    _remember_huffman_decoding()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of streamer
        asyncio.run(_main(args.kind, args.directory))
    else:
        uvloop.run(_main(args.kind, args.directory))


if __name__ == "__main__":
    main(sys.argv[1:])
