"""Operator tools: publish, status, up, replay, dead letters, the container health check."""
