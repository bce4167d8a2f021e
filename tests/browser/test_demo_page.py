"""The whole path in a real browser: XADD -> worker -> gateway -> notify-client.js -> demo page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
import redis as syncredis
from playwright.sync_api import Page, Route, WebSocket

from tests.browser.demo_page import DemoPage
from tests.browser.stack import (
    Gateway,
    Publisher,
    has_socket_owner,
    mint,
    publish,
    user_log_ids,
)
from tests.support.polling import wait_for
from tests.support.servers import RedisServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.timeout(90)


def open_demo(page: Page, gateway: Gateway, rclient: syncredis.Redis, user: str) -> DemoPage:
    """Open the demo page and wait until the gateway owns its socket, so live events reach it."""
    demo = DemoPage(page, gateway.base).open(user, mint(user, 600))
    demo.wait_state("open")
    wait_for(lambda: has_socket_owner(rclient, user), timeout=10, what="socket ownership")
    return demo


def test_page_shows_events_added_to_the_stream(
    page: Page, gateway: Gateway, rclient: syncredis.Redis
) -> None:
    """Events XADDed to notify:events appear on the demo page in order, with their ids."""
    demo = open_demo(page, gateway, rclient, "ada")
    events: list[tuple[str, dict[str, Any]]] = [
        ("ai_generation_progress", {"job": "poster-7", "progress": 40}),
        ("ai_generation_progress", {"job": "poster-7", "progress": 100}),
        ("ai_generation_done", {"job": "poster-7", "title": "Your poster is ready"}),
        ("comment_added", {"by": "grace", "body": "Love the colours!"}),
        ("share_invite", {"from": "linus", "project": "Spring campaign"}),
    ]
    for event_type, data in events:
        publish(rclient, "ada", event_type, data)
    demo.wait_count(len(events))
    shown = demo.shown()
    assert [(s.type, s.content) for s in shown] == events
    assert [s.id for s in shown] == user_log_ids(rclient, "ada")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(
        path=str(ARTIFACTS / "demo.png"), clip={"x": 0, "y": 0, "width": 960, "height": 400}
    )


def test_gateway_restart_loses_and_doubles_nothing(
    page: Page, gateway: Gateway, rclient: syncredis.Redis, stack_redis: RedisServer
) -> None:
    """Stopping and restarting the gateway while events flow leaves every event exactly once, in
    order: the client reconnects with backoff and resumes from its last id."""
    demo = open_demo(page, gateway, rclient, "bob")
    publisher = Publisher(stack_redis.url, "bob", count=40, interval_s=0.05)
    publisher.start()
    try:
        demo.wait_count(8)
        assert gateway.stop() == 0
        # Events published while no gateway runs exist only in the user log: resume must fetch them.
        down_at = publisher.published
        wait_for(lambda: publisher.published >= down_at + 5, timeout=10, what="offline events")
        gateway.start()
        publisher.finish()
    finally:
        publisher.halt()
    demo.wait_count(40)
    assert demo.numbers() == list(range(1, 41))
    assert demo.reconnects() >= 1
    assert demo.recovery()["recovered"] == "true"


def test_reload_resumes_from_session_storage(
    page: Page, gateway: Gateway, rclient: syncredis.Redis
) -> None:
    """After a reload the page resumes from the id kept in sessionStorage: events published while
    it was away are replayed, exactly once, then live delivery continues."""
    demo = open_demo(page, gateway, rclient, "cy")
    for n in (1, 2, 3):
        publish(rclient, "cy", "test", {"n": n})
    demo.wait_count(3)
    page.evaluate("window.notifyDemo.client.close()")
    wait_for(lambda: not has_socket_owner(rclient, "cy"), timeout=10, what="socket closed")
    for n in (4, 5, 6):
        publish(rclient, "cy", "test", {"n": n})
    wait_for(lambda: len(user_log_ids(rclient, "cy")) == 6, timeout=10, what="offline events")

    page.reload()
    demo.wait_count(3)
    assert demo.numbers() == [4, 5, 6]
    assert demo.recovery() == {"recovered": "true", "replayed": "3"}
    publish(rclient, "cy", "test", {"n": 7})
    demo.wait_count(4)
    assert demo.numbers() == [4, 5, 6, 7]


def test_expiring_token_is_renewed_through_get_token(
    page: Page, gateway: Gateway, rclient: syncredis.Redis
) -> None:
    """A short-lived token makes the client call getToken() and reconnect with the new token
    before the gateway would cut it off; events before and after the switch arrive once each."""
    minted: list[str] = []

    def token_endpoint(route: Route) -> None:
        # Stands in for the app's auth backend; it runs in the test, so no secret is committed.
        minted.append(mint("dee", 600))
        route.fulfill(status=200, content_type="text/plain", body=minted[-1])

    page.route("**/test-token", token_endpoint)
    sockets: list[WebSocket] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    short = mint("dee", 3)
    demo = DemoPage(page, gateway.base).open("dee", short, token_url=f"{gateway.base}/test-token")
    demo.wait_state("open")
    wait_for(lambda: has_socket_owner(rclient, "dee"), timeout=10, what="socket ownership")
    publish(rclient, "dee", "test", {"n": 1})
    demo.wait_count(1)

    # Past the first token's expiry, with the page connected again: only a renewed token gets here.
    page.wait_for_function(
        "exp => Date.now() > exp + 500"
        " && document.getElementById('state').dataset.state === 'open'",
        arg=_expiry_ms(short),
        timeout=15_000,
    )
    publish(rclient, "dee", "test", {"n": 2})
    demo.wait_count(2)
    assert demo.numbers() == [1, 2]
    assert minted, "getToken() was never called"
    assert len(sockets) >= 2
    assert page.evaluate("window.notifyDemo.client.token") == minted[-1]


def _expiry_ms(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"]) * 1000


def test_lost_history_surfaces_as_resync(
    page: Page, gateway: Gateway, rclient: syncredis.Redis
) -> None:
    """Resuming from an id the user log no longer holds yields recovered:false, which the client
    surfaces through onResync (the page shows its refetch banner) and then delivers live."""
    ws_base = gateway.base.replace("http://", "ws://")
    key = f"notify-client:{ws_base}:eve:last_event_id"
    page.add_init_script(f"sessionStorage.setItem({key!r}, '1-0')")
    demo = open_demo(page, gateway, rclient, "eve")
    page.wait_for_selector("#resync.shown", timeout=10_000)
    assert demo.recovery() == {"recovered": "false", "replayed": "0"}
    publish(rclient, "eve", "test", {"n": 1})
    demo.wait_count(1)
    assert demo.numbers() == [1]


def test_first_open_shows_events_published_before(
    page: Page, gateway: Gateway, rclient: syncredis.Redis
) -> None:
    """The README's order (start, publish, then open the page): the page's first socket asks
    for the newest events (?history=20), so they appear, once each, then live ones follow."""
    for n in (1, 2, 3):
        publish(rclient, "fay", "test", {"n": n})
    wait_for(lambda: len(user_log_ids(rclient, "fay")) == 3, timeout=10, what="events logged")
    demo = open_demo(page, gateway, rclient, "fay")
    demo.wait_count(3)
    assert demo.numbers() == [1, 2, 3]
    assert demo.recovery() == {"recovered": "true", "replayed": "3"}
    publish(rclient, "fay", "test", {"n": 4})
    demo.wait_count(4)
    assert demo.numbers() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("signed_by", "status"),
    [("another secret", "401"), ("another user", "403")],
)
def test_refused_token_shows_an_error_and_stops_reconnecting(
    page: Page, gateway: Gateway, signed_by: str, status: str
) -> None:
    """A token the gateway refuses (bad signature: 401; another user's: 403) ends in a
    visible error naming the status, and the page stops trying instead of reconnecting
    forever (a browser cannot read the handshake's status: /auth-check tells it)."""
    if signed_by == "another secret":
        refused = jwt.encode({"sub": "gus", "exp": 2_000_000_000}, "x" * 40, algorithm="HS256")
    else:
        refused = mint("not-gus", 600)
    demo = DemoPage(page, gateway.base).open("gus", refused)
    page.wait_for_selector("#error.shown", timeout=20_000)
    demo.wait_state("closed")
    assert page.eval_on_selector("#error", "el => el.dataset.status") == status
    assert f"({status})" in (page.text_content("#error") or "")
    # Stopped for good: not running, and no reconnect (or any other timer) scheduled.
    stopped = "c => !c._running && c._timers.size === 0 && c._socket === null"
    assert page.evaluate(f"({stopped})(window.notifyDemo.client)")
