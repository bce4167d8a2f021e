"""`python -m benchmarks [NAME…] [--flags]`: run the named benchmarks (default: worker, e2e).

`--list` prints the names; an unknown name exits 2 without running anything."""

from __future__ import annotations

import importlib
import sys

AVAILABLE = ("worker", "e2e", "sockets", "push", "bridge", "replay", "api", "cluster")
DEFAULT = ("worker", "e2e")


def main(argv: list[str]) -> None:
    if "--list" in argv:
        print("\n".join(f"{n}{' (default)' if n in DEFAULT else ''}" for n in AVAILABLE))
        return
    # Names come first; flags (and their values) after them.
    leading = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    unknown = [a for a in argv[:leading] if a not in AVAILABLE]
    if unknown:
        print(
            f"benchmarks: unknown benchmark {', '.join(unknown)}; available: {' '.join(AVAILABLE)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    names = argv[:leading] or list(DEFAULT)
    rest = argv[leading:]
    for name in names:
        print(f"== benchmark: {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
