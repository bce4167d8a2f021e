"""Infrastructure shared by every process kind: settings, Redis, logs, metrics, HTTP."""
