"""Bridges that move events from other transports into the ingress stream.

- ``bridges.rabbitmq``: RabbitMQ queues -> stream, idempotent, ack after XADD (pika).
- ``bridges.pubsub``: Redis Pub/Sub channels and patterns -> stream (fire and forget in).

Pure decisions live in ``bridges.core``; ``bridges.idempotent`` is the only writer to the
stream; ``bridges.http`` serves /metrics and /healthz from a thread, because both bridges
run a blocking client on the main thread.
"""
