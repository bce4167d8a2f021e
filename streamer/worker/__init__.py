"""The stream worker: consumer group reader, delivery, ack."""
