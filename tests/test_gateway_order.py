"""Two workers racing to a gateway inbox must not leave a live socket with a gap."""

from __future__ import annotations

import redis.asyncio as aioredis

from streamer.decode import Event
from streamer.gateway.resume import Frame, has_gap
from streamer.schemas import NotificationPayload, encode_content
from streamer.worker.userlog import Appended, InboxDelivery, UserLogWriter
from tests.support.events import KEYS, worker_settings
from tests.support.gateway import numbers, open_socket, publish, receive, running_gateway
from tests.support.servers import RedisServer


def test_has_gap_only_when_prev_is_beyond_what_was_sent() -> None:
    """A frame whose predecessor is newer than the last id sent reveals a missed entry."""
    frame = Frame((5, 0), b"", prev=(4, 0))
    assert has_gap(frame, (3, 0))
    assert not has_gap(frame, (4, 0))
    assert not has_gap(frame, None)
    assert not has_gap(Frame((5, 0), b""), (3, 0))


async def test_overtaking_delivery_is_preceded_by_the_one_it_overtook(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Inbox entries arriving in the reverse of log order still reach the socket in log
    order, each once: the later one carries its predecessor and the gap is filled."""
    async with running_gateway(redis_server.url) as gateway:
        conn = await open_socket(gateway.port, "dave")
        await publish(redis, redis_server.url, "dave", range(1))
        assert numbers(await receive(conn, 1)) == [0]
        writer = UserLogWriter(redis, KEYS, worker_settings(redis_server.url).delivery)
        events = [_event("dave", n) for n in (1, 2)]
        appended = await writer.append(events)  # type: ignore[arg-type]
        first, second = (a for a in appended if isinstance(a, Appended))
        # The worker holding the later event reaches the inbox first.
        await writer.deliver_to_inboxes(
            [
                _delivery(gateway.gateway_id, events[1], second),
                _delivery(gateway.gateway_id, events[0], first),
            ]
        )
        frames = await receive(conn, 2)
        assert numbers(frames) == [1, 2]
        assert [f["id"] for f in frames] == [first.log_id, second.log_id]
        await publish(redis, redis_server.url, "dave", range(3, 4))
        assert numbers(await receive(conn, 1)) == [3]  # and nothing doubled in between
        await conn.close()


def _event(user: str, n: int) -> Event:
    payload = NotificationPayload(user_id=user, event_type="test", data={"n": n})
    return Event(f"{n}-0", payload, f"manual-{n}")


def _delivery(gateway_id: str, event: Event, appended: Appended) -> InboxDelivery:
    return InboxDelivery(
        gateway_id=gateway_id,
        user_id=event.payload.user_id,
        log_id=appended.log_id,
        event_type=event.payload.event_type,
        content=encode_content(event.payload),
        ingress_ms=0,
        prev_id=appended.prev_id,
    )
