"""The chaos harness's own parts, checked without a stack (these run in `just test`): the
tally counts exactly, the proxy's faults do what they say, the faketime launcher skews a
clock, and the RELIABILITY.md writer keeps the human text around its table."""

from __future__ import annotations

import collections
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.reliability import BEGIN, END, Row, write_section
from tests.support.load import Figures, Tally
from tests.support.processes import faketime_env
from tests.support.proxy import TcpProxy


def frame(ms: int, seq: int) -> dict[str, object]:
    return {"id": f"{ms}-0", "type": "chaos", "content": {"seq": seq}}


def test_tally_counts_lost_duplicated_and_out_of_order_exactly() -> None:
    """Missing numbers are lost; second copies and numbers never produced are duplicates;
    a first copy arriving after a later log id is out of order."""
    tally = Tally()
    for ms, seq in [(1, 0), (2, 1), (4, 3), (3, 2), (2, 1), (5, 9)]:
        tally.see("u", frame(ms, seq))
    tally.see("v", frame(1, 0))
    produced = collections.Counter({"u": 5, "v": 2})
    assert tally.figures(produced) == Figures(
        events=7, lost=2, duplicated=2, out_of_order=1, max_delay_s=0.0
    )
    assert tally.has_all("u", 4) and not tally.has_all("u", 5)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on a free port."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def echoes(sock: socket.socket, timeout: float = 1.0) -> bool:
    sock.settimeout(timeout)
    sock.sendall(b"ping")
    try:
        return sock.recv(4) == b"ping"
    except TimeoutError:
        return False


def test_proxy_black_hole_then_heal_leaves_old_connections_half_open(echo_port: int) -> None:
    """In a black hole nothing passes and nothing is closed; after healing, new connections
    pass and the old one still carries nothing, without being closed."""
    proxy = TcpProxy("127.0.0.1", echo_port)
    try:
        old = socket.create_connection(("127.0.0.1", proxy.port))
        assert echoes(old)
        proxy.blackhole()
        assert not echoes(old, timeout=0.3)
        during = socket.create_connection(("127.0.0.1", proxy.port))
        assert not echoes(during, timeout=0.3)
        proxy.heal()
        new = socket.create_connection(("127.0.0.1", proxy.port))
        assert echoes(new)
        assert not echoes(old, timeout=0.3)  # no reply, and no EOF either
        assert proxy.cut() == 3
        old.settimeout(1)
        assert old.recv(4) == b""  # cut: closed at last
    finally:
        proxy.close()


def test_faketime_launcher_skews_the_wall_clock_only() -> None:
    """A process started with faketime_env(-30) reads a wall clock 30 s behind."""
    code = "import time; print(time.time())"
    env = faketime_env({"PATH": "/usr/bin:/bin"}, -30)
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert -32 < float(out.stdout) - before < -28


def row(name: str, passed: bool = True) -> Row:
    return Row(name, passed, "" if passed else "boom", Figures(10), 0, 1.0, "", "today")


def test_reliability_section_is_rewritten_between_markers(tmp_path: Path) -> None:
    """The text around the markers stays; this run's rows replace older ones, rows of
    scenarios that did not run stay, rows of scenarios that no longer exist go."""
    path = tmp_path / "RELIABILITY.md"
    path.write_text("# Reliability\n\nWritten by hand.\n")
    write_section(path, [row("a"), row("gone")], ["a", "gone"], "first")
    write_section(path, [row("b", passed=False)], ["a", "b"], "second")
    text = path.read_text()
    assert text.startswith("# Reliability\n\nWritten by hand.\n\n" + BEGIN + "\nsecond\n")
    assert text.endswith(END + "\n")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[2:]] == ["| a", "| b"]
    assert "**FAIL**: boom" in table[3]
