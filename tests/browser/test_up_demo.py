"""`streamer up` prints a demo URL that opens a working demo page."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser.demo_page import DemoPage
from tests.browser.stack import healthy
from tests.support.polling import wait_for
from tests.support.servers import free_port, streamer_env

pytestmark = pytest.mark.timeout(60)

DEMO_URL = re.compile(r"demo page: (http://\S+)")


def test_up_prints_a_demo_url_that_shows_published_events(page: Page, tmp_path: Path) -> None:
    """`streamer up` (no DEMO_MODE set) serves /demo and prints its URL with a token for the demo
    user; opened in Chromium it goes live and lists an event from `streamer publish`."""
    redis_port, gateway_port = free_port(), free_port()
    env = streamer_env(
        "unused",
        EMBEDDED_REDIS_PORT=str(redis_port),
        GATEWAY_PORT=str(gateway_port),
        GATEWAY_HOST="127.0.0.1",
    )
    for name in ("REDIS_URL", "DEMO_MODE", "JWT_SECRET", "JWT_PUBLIC_KEY_FILE"):
        env.pop(name, None)
    output = tmp_path / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "streamer", "up", "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        match = wait_for(
            lambda: DEMO_URL.search(output.read_text(errors="replace")),
            timeout=30,
            what="the demo URL in the output of streamer up",
        )
        url = match[1]
        assert url.startswith(f"http://127.0.0.1:{gateway_port}/demo?user=demo&token=")
        # The URL is printed as the children start; the gateway listens a moment later.
        wait_for(lambda: healthy(gateway_port), timeout=30, what="the gateway of streamer up")
        page.goto(url)
        demo = DemoPage(page, url)
        demo.wait_state("open", timeout_ms=30_000)
        publish = ["publish", "--user", "demo", "--type", "hello", "--data", '{"n": 1}']
        subprocess.run(
            [sys.executable, "-m", "streamer", *publish],
            env=streamer_env(f"redis://127.0.0.1:{redis_port}/0"),
            check=True,
            capture_output=True,
        )
        demo.wait_count(1)
        assert [(s.type, s.content) for s in demo.shown()] == [("hello", {"n": 1})]
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
