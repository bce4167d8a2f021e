"""The wire contract: the event schema and its decoding, stream ids, Redis key names."""
