"""Operator tools: publish, status, up, replay, dead letters."""
