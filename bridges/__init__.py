"""Bridges that move events from other transports into the ingress partition streams.

- ``bridges.rabbitmq``: RabbitMQ queues -> streams, idempotent, ack after XADD (pika).
- ``bridges.pubsub``: Redis Pub/Sub channels and patterns -> streams (fire and forget in).

Pure decisions live in ``bridges.core`` (what to write where, what to reject) and
``bridges.batching`` (how a batch becomes script calls, progress records and digests);
``bridges.idempotent`` is the only writer to the streams; ``bridges.inflight`` runs the
RabbitMQ bridge's writes in a worker thread; ``bridges.http`` serves /metrics and /healthz
from a thread, because both bridges run a blocking client on the main thread.
"""
