"""Reprocessing: replay a range of the ingress stream, requeue dead letters.

Pure logic (ids, times, ranges, filters, field rewriting, pacing) lives in ``ids``,
``entries`` and ``pacing``; Redis I/O in ``source``, ``runner`` and ``deadletters``;
terminal output in ``progress``; ``cli`` is the `streamer replay` command. The
`streamer dlq` command (streamer.ops.dlq) reuses these pieces.
"""
