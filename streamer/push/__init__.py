"""Push delivery: the PushSender interface and its implementations."""
