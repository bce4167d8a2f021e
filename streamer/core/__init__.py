"""Pure decisions shared by the process kinds (no I/O)."""
