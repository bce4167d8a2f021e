"""Fixtures of the browser tests: a private redis-server and worker per module, a gateway
per test, one Chromium per module and a fresh browser context (fresh storage) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as syncredis
from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser.demo_page import CHROMIUM_ARGS, chromium_path
from tests.browser.stack import Gateway, stop_quietly
from tests.support.events import KEYS
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess, start_streamer
from tests.support.servers import RedisServer, streamer_env


@pytest.fixture(scope="module")
def stack_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of our own; never flushed while the module's processes use it."""
    server = RedisServer(Path(tmp_path_factory.mktemp("browser-redis"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rclient(stack_redis: RedisServer) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(stack_redis.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def worker(
    stack_redis: RedisServer, rclient: syncredis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamerProcess]:
    env = streamer_env(stack_redis.url, WORKER_ID="browser-worker", BLOCK_MS="200")
    log = Path(tmp_path_factory.mktemp("browser-worker")) / "worker.log"
    process = start_streamer(["worker"], env, log)
    try:
        wait_for(lambda: rclient.zcard(KEYS.workers), timeout=20, what=f"worker ({log})")
        yield process
    finally:
        stop_quietly(process)


@pytest.fixture
def gateway(stack_redis: RedisServer, worker: StreamerProcess, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(stack_redis.url, tmp_path).start()
    yield gw
    stop_quietly(gw)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context; any uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 960, "height": 640})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
