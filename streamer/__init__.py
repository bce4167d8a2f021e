"""streamer: the notification delivery service of CreativeFlow."""

__version__ = "0.1.0"
