"""`python -m benchmarks [NAME…] [-- ARGS]`: run the named benchmarks (default: worker, e2e)."""

from __future__ import annotations

import importlib
import sys

AVAILABLE = ("worker", "e2e", "push", "bridge", "replay")
DEFAULT = ("worker", "e2e")


def main(argv: list[str]) -> None:
    names = [a for a in argv if a in AVAILABLE] or list(DEFAULT)
    rest = [a for a in argv if a not in AVAILABLE]
    for name in names:
        print(f"== benchmark: {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
