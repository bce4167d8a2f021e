"""notify-client.js as a plain file (no gateway): its pure helpers, run in Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, Route

CLIENT = Path(__file__).resolve().parents[2] / "streamer" / "static" / "notify-client.js"
ORIGIN = "http://client.test"

pytestmark = pytest.mark.timeout(30)


def serve_file(route: Route) -> None:
    if route.request.url.endswith("/client.js"):
        route.fulfill(body=CLIENT.read_text(), content_type="text/javascript")
    else:
        route.fulfill(body="<!doctype html><title>blank</title>", content_type="text/html")


def test_helpers_order_ids_read_expiry_and_bound_backoff(page: Page) -> None:
    """Stream ids compare numerically (not as strings), the JWT exp is read in ms, and the
    jittered backoff stays between half the initial delay and the exponential cap."""
    page.route(f"{ORIGIN}/**", serve_file)
    page.goto(f"{ORIGIN}/")
    result = page.evaluate(
        """async () => {
          const m = await import('/client.js');
          const claims = btoa(JSON.stringify({sub: 'u', exp: 1700000000}))
            .replace(/=+$/, '').replace(/\\+/g, '-').replace(/\\//g, '_');
          return {
            order: [['9-1', '10-0'], ['10-2', '10-10'], ['5-5', '5-5'], ['20-0', '3-9']]
              .map(([a, b]) => m.compareIds(a, b)),
            exp: m.tokenExpiryMs(`e30.${claims}.sig`),
            garbage: m.tokenExpiryMs('not-a-jwt'),
            low: [0, 3, 40].map(n => m.backoffDelayMs(n, 500, 15000, () => 0)),
            high: [0, 3, 40].map(n => m.backoffDelayMs(n, 500, 15000, () => 0.999999)),
          };
        }"""
    )
    assert result["order"] == [-1, -1, 0, 1]
    assert result["exp"] == 1_700_000_000_000
    assert result["garbage"] is None
    assert result["low"] == [250, 250, 250]
    assert result["high"] == [500, 4000, 15000]


def test_history_is_asked_only_without_a_stored_last_id(page: Page) -> None:
    """`history: N` adds ?history=N to a first open; a stored last id resumes instead."""
    page.route(f"{ORIGIN}/**", serve_file)
    page.goto(f"{ORIGIN}/")
    urls = page.evaluate(
        """async () => {
          const m = await import('/client.js');
          const opened = [];
          class FakeSocket { constructor(url) { opened.push(url); } close() {} }
          const token = 'e30.e30.sig';
          const store = (id) => ({ getItem: () => id, setItem() {}, removeItem() {} });
          for (const storage of [store(null), store('7-0')]) {
            const client = new m.NotifyClient({ userId: 'u', token, history: 5, storage,
              url: 'ws://gw.test', WebSocket: FakeSocket });
            client.connect();
            await new Promise((resolve) => setTimeout(resolve, 0));
            client.close();
          }
          return opened;
        }"""
    )
    assert urls == ["ws://gw.test/ws/u?history=5", "ws://gw.test/ws/u?last_event_id=7-0"]
