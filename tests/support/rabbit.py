"""RabbitMQ helpers for the bridge tests: confirmed batch publishing, queue inspection,
the URL of the broker behind a ``TcpProxy`` (``tests.support.proxy``), and a bridge
running in a thread.

Tests use the shared broker at RABBITMQ_URL with queue names unique per test, and delete
only the queues they created.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import pika
import pika.exceptions
import redis

from streamer.contract.keys import Keys
from tests.support.proxy import TcpProxy

RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def unique_queue(prefix: str = "test_bridge") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def channel(url: str = RABBITMQ_URL) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            connection.close()


def ready_count(queue: str) -> int:
    """Messages ready in a queue (not counting those delivered and not yet acked)."""
    with channel() as ch:
        return int(ch.queue_declare(queue, passive=True).method.message_count)


def delete_queues(*queues: str) -> None:
    with channel() as ch:
        for queue in queues:
            ch.queue_delete(queue)


def drain(queue: str) -> list[tuple[bytes, Any]]:
    """Take every ready message out of a queue: (body, properties)."""
    messages = []
    with channel() as ch:
        while True:
            method, properties, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((body, properties))


def event(n: int, user: str = "u1") -> bytes:
    return json.dumps({"user_id": user, "event_type": "test", "data": {"n": n}}).encode()


def publish_confirmed(
    queue: str,
    bodies: Sequence[bytes],
    message_ids: Sequence[str | None] | None = None,
    *,
    window: int = 1000,
    timeout_s: float = 60.0,
) -> None:
    """Publish persistent messages to ``queue`` (default exchange) and return once the
    broker has confirmed every one. Keeps up to ``window`` confirms outstanding, which is
    far faster than BlockingChannel's one-confirm-per-publish."""
    ids = list(message_ids) if message_ids is not None else [None] * len(bodies)
    state = {"sent": 0, "confirmed": 0, "error": ""}
    params = pika.URLParameters(RABBITMQ_URL)

    def publish_more(ch: Any) -> None:
        while state["sent"] < len(bodies) and state["sent"] - state["confirmed"] < window:
            i = int(state["sent"])
            props = pika.BasicProperties(delivery_mode=2, message_id=ids[i])
            ch.basic_publish("", queue, bodies[i], props)
            state["sent"] = i + 1

    def on_confirm(frame: Any, ch: Any, conn: Any) -> None:
        if isinstance(frame.method, pika.spec.Basic.Nack):
            state["error"] = f"broker nacked delivery {frame.method.delivery_tag}"
            conn.close()
            return
        # Tags count from 1 in publish order; a multiple ack confirms all up to its tag.
        state["confirmed"] = max(int(state["confirmed"]), frame.method.delivery_tag)
        if state["confirmed"] >= len(bodies):
            conn.close()
        else:
            publish_more(ch)

    def on_channel(ch: Any, conn: Any) -> None:
        ch.confirm_delivery(lambda frame: on_confirm(frame, ch, conn))
        publish_more(ch)

    def on_open(conn: Any) -> None:
        conn.channel(on_open_callback=lambda ch: on_channel(ch, conn))

    def on_open_error(conn: Any, exc: BaseException) -> None:
        state["error"] = f"cannot connect: {exc!r}"
        conn.ioloop.stop()

    def on_timeout(conn: Any) -> None:
        state["error"] = f"timed out after {timeout_s}s ({state['confirmed']} confirmed)"
        conn.close()

    if not bodies:
        return
    conn = pika.SelectConnection(
        params,
        on_open_callback=on_open,
        on_open_error_callback=on_open_error,
        on_close_callback=lambda c, _exc: c.ioloop.stop(),
    )
    conn.ioloop.call_later(timeout_s, lambda: on_timeout(conn))
    conn.ioloop.start()
    assert not state["error"], state["error"]
    assert state["confirmed"] == len(bodies)


def stream_numbers(client: redis.Redis, stream: str) -> list[int]:
    """data.n of every entry in the stream, in stream order."""
    return [json.loads(f[b"payload"])["data"]["n"] for _, f in client.xrange(stream)]


def ingress_streams(keys: Keys) -> tuple[str, ...]:
    """Every stream a bridge may write an event to: each partition, and the compatibility
    stream (which no bridge should write to any more: counting it catches one that does)."""
    return (*(p.stream for p in keys.partitions), keys.stream)


def all_numbers(client: redis.Redis, keys: Keys) -> list[int]:
    """data.n of every entry in every ingress stream, sorted: what arrived, with repeats."""
    return sorted(n for stream in ingress_streams(keys) for n in stream_numbers(client, stream))


def ingress_length(client: redis.Redis, keys: Keys) -> int:
    """Entries in all ingress streams, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for stream in ingress_streams(keys):
        pipe.xlen(stream)
    return sum(pipe.execute())


class Runnable(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


class InThread:
    """Run a bridge in a thread; ``stop()`` re-raises whatever the bridge raised."""

    def __init__(self, bridge: Runnable) -> None:
        self.bridge = bridge
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bridge", daemon=True)

    def _run(self) -> None:
        try:
            self.bridge.run()
        except BaseException as exc:  # handed to the test in stop()
            self.error = exc

    def start(self) -> InThread:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        self.bridge.stop()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "bridge did not stop"
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def proxied_url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/"


def wait_quiet(predicate: Callable[[], bool]) -> bool:
    """Evaluate a predicate, treating broker hiccups as 'not yet'."""
    try:
        return predicate()
    except pika.exceptions.AMQPError:
        return False
