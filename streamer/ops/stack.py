"""Where the local stack is: the state file `streamer up` writes, read by every command.

`streamer up` writes ``<data dir>/stack.json`` (default data dir ``.streamer``, relative to
where it runs; ``STREAMER_DATA_DIR`` names another) with the embedded Redis URL, the
gateway's address and its own pid, and removes it when it stops. A command run with
``REDIS_URL`` unset uses the Redis of a live stack found there, and otherwise the default
Redis; either way it says on stderr which Redis it talks to.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_DATA_DIR = ".streamer"
DATA_DIR_VARIABLE = "STREAMER_DATA_DIR"
STATE_FILE = "stack.json"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class StackState:
    """What a running `streamer up` tells other commands."""

    redis_url: str
    gateway_url: str
    pid: int


def data_dir(environ: Mapping[str, str], flag: str | None = None) -> Path:
    """The data directory: ``--data-dir``, else STREAMER_DATA_DIR, else ``.streamer``."""
    return Path(flag or environ.get(DATA_DIR_VARIABLE, "").strip() or DEFAULT_DATA_DIR)


def write(directory: Path, state: StackState) -> Path:
    """Write the state file atomically (a reader never sees half of it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(state)) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def remove(directory: Path, pid: int) -> None:
    """Remove the state file if it is still ours (another `up` may have replaced it)."""
    found = read(directory)
    if found is not None and found.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            (directory / STATE_FILE).unlink()


def read(directory: Path) -> StackState | None:
    """The state file's content; None when it is missing or unreadable."""
    try:
        body = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        return StackState(str(body["redis_url"]), str(body["gateway_url"]), int(body["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def live_stack(directory: Path) -> StackState | None:
    """The stack described in ``directory`` if its `streamer up` still runs."""
    state = read(directory)
    return state if state is not None and process_alive(state.pid) else None


def choose_redis(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(REDIS_URL to use, the note to print) when REDIS_URL is unset; None when it is set."""
    if environ.get("REDIS_URL", "").strip():
        return None
    directory = data_dir(environ)
    stack = live_stack(directory)
    if stack is not None:
        where = directory / STATE_FILE
        return stack.redis_url, f"REDIS_URL unset: using the stack of `streamer up` ({where})"
    return DEFAULT_REDIS_URL, "REDIS_URL unset and no `streamer up` stack here: using the default"
