"""notify-client.js follows topics in Chromium: subscribe, events in order, resume of a
topic after a reload, and lost history surfaced as a resync."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import redis as syncredis
from playwright.sync_api import Page

from tests.browser.stack import JWT_SECRET, Gateway
from tests.support.events import KEYS
from tests.support.polling import wait_for

TOPIC = "project:7"

pytestmark = pytest.mark.timeout(60)

FOLLOW = """([url, token, topic]) => import('/client.js').then((m) => {
  window.got = window.got || [];
  window.resyncs = window.resyncs || [];
  const client = new m.NotifyClient({ userId: 'tina', token, url });
  client.subscribe(topic, (content, message) => window.got.push([message.topic, content.n]),
                   { onResync: (info) => window.resyncs.push(info) });
  client.connect();
  window.client = client;
})"""


def token() -> str:
    claims = {"sub": "tina", "exp": int(time.time()) + 600, "topics": ["project:*"]}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def publish_topic(client: syncredis.Redis, numbers: range) -> None:
    pipe = client.pipeline(transaction=False)
    for n in numbers:
        body = {"topic": TOPIC, "event_type": "edit", "data": {"n": n}}
        pipe.xadd(KEYS.stream, {"payload": json.dumps(body)})  # an unchanged producer
    pipe.execute()


def subscribed(client: syncredis.Redis) -> bool:
    return bool(client.hlen(KEYS.topic_owners(TOPIC)))


def follow(page: Page, gateway: Gateway) -> None:
    page.goto(f"{gateway.base}/livez")  # any page of the gateway's origin imports /client.js
    page.evaluate(FOLLOW, [f"ws://127.0.0.1:{gateway.port}", token(), TOPIC])


def got(page: Page) -> list[int]:
    return [n for _, n in page.evaluate("window.got")]


def test_a_topic_is_followed_resumed_after_a_reload_and_resynced_when_lost(
    page: Page, gateway: Gateway, rclient: syncredis.Redis
) -> None:
    """Events of a subscribed topic arrive in order; after a reload the client resumes the
    topic from sessionStorage and gets exactly what it missed; when the topic's history is
    gone, onResync is called instead of a silent gap."""
    rclient.delete(KEYS.topic_log(TOPIC))
    follow(page, gateway)
    wait_for(lambda: subscribed(rclient), timeout=20, what="the subscription")
    publish_topic(rclient, range(3))
    wait_for(lambda: got(page) == [0, 1, 2], timeout=20, what="three topic events")
    page.evaluate("window.client.close()")
    publish_topic(rclient, range(3, 6))
    wait_for(lambda: rclient.xlen(KEYS.topic_log(TOPIC)) == 6, timeout=20, what="logged")
    page.reload()
    follow(page, gateway)
    wait_for(lambda: got(page) == [3, 4, 5], timeout=20, what="the missed events, once")
    assert page.evaluate("window.resyncs") == []
    page.evaluate("window.client.close()")
    rclient.delete(KEYS.topic_log(TOPIC))  # the topic's history expired meanwhile
    page.reload()
    follow(page, gateway)
    wait_for(lambda: page.evaluate("window.resyncs.length") == 1, timeout=20, what="a resync")
    publish_topic(rclient, range(6, 8))
    wait_for(lambda: got(page) == [6, 7], timeout=20, what="live again")
