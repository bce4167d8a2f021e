"""The `streamer` command line. It only parses arguments and calls each command's module.

Failures an operator can cause print one line, never a traceback, and exit with one of the
codes in ``EXIT_CODES`` (the same for every command; `streamer --help` shows them). With
REDIS_URL unset a command uses the Redis of the stack `streamer up` runs here
(``streamer.ops.stack``), else the default, and says which on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from streamer.infra.errors import ConfigError, StartupError
from streamer.ops import environment, stack

Handler = Callable[[argparse.Namespace], int]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

EXIT_CODES = """exit codes (every command):
  0    done (`status`: healthy)
  1    failed: Redis unreachable or failing, `status` unhealthy, `publish` rejected lines,
       a process of `streamer up` exited, a port already in use
  2    bad input or configuration: one line on stderr naming the argument or variable
  130  interrupted (Ctrl-C, SIGTERM) before the work was done
  141  stdout closed early (piped into `head`): the output was cut, nothing else failed"""

# Each module exposes register(subparsers) and sets a `handler` default on its parser(s).
# Registration imports no process module: each handler imports what its command runs.
COMMAND_MODULES = (
    "streamer.worker.cli",
    "streamer.ops.publish",
    "streamer.ops.status",
    "streamer.ops.up",
    "streamer.bridging",
    "streamer.ops.replay.cli",
    "streamer.ops.dlq",
    "streamer.ops.partition",
    "streamer.gateway.cli",
    "streamer.api.cli",
    "streamer.ops.healthcheck",
)

# Commands that do not talk to Redis, or that choose their own (`up` starts one).
_NO_REDIS = frozenset({"token", "up", "healthcheck", "partition"})


class Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 2 (argparse prints the usage as well)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="streamer",
        description="streamer: notification delivery (Redis Streams in; WebSockets, APNs and "
        "FCM out). `streamer COMMAND --help` lists each command's options and variables.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamer {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _document(sub, "")
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("streamer")
    except metadata.PackageNotFoundError:
        return "unknown"


def _document(sub: Any, prefix: str) -> None:
    """Give each command a description (its help line) and the list of the environment
    variables it reads, with defaults, at the end of its --help."""
    helps = {action.dest: action.help for action in sub._choices_actions}
    for name, parser in sub.choices.items():
        command = f"{prefix}{name}"
        parser.description = parser.description or helps.get(name)
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            _document(action, f"{command} ")
        if command in environment.COMMANDS:
            parser.epilog = environment.help_epilog(command)
            parser.formatter_class = argparse.RawDescriptionHelpFormatter


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(build_parser().parse_args(argv))
    except BrokenPipeError:
        return _stdout_gone()


def _run(args: argparse.Namespace) -> int:
    try:
        if _command(args) not in _NO_REDIS:
            _choose_redis()
        handler: Handler = args.handler
        return handler(args)
    except ConfigError as exc:
        return _fail(args, f"configuration error: {exc}", EXIT_BAD_INPUT)
    except StartupError as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # an OSError, but stdout's, not Redis's: main() handles it
    except Exception as exc:
        cause = _redis_error(exc)
        if cause is None:
            raise
        return _fail(args, f"cannot reach Redis at {_redis_url()}: {_reason(cause)}", EXIT_FAILED)


def _command(args: argparse.Namespace) -> str:
    return str(args.command)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"streamer {_command(args)}: {message}", file=sys.stderr)
    return code


def _choose_redis() -> None:
    chosen = stack.choose_redis(os.environ)
    if chosen is None:
        return
    url, why = chosen
    os.environ["REDIS_URL"] = url
    print(f"streamer: {why}: {url}", file=sys.stderr)


def _redis_url() -> str:
    from streamer.infra.logs import redact

    return redact(os.environ.get("REDIS_URL", stack.DEFAULT_REDIS_URL))


def _redis_error(exc: BaseException) -> BaseException | None:
    """The Redis failure behind ``exc``: itself, or what a RetryableError was mapped from
    (the producer maps Redis errors once), else None."""
    from streamer.infra.errors import RetryableError
    from streamer.infra.redis import REDIS_ERRORS

    if isinstance(exc, RetryableError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc if isinstance(exc, REDIS_ERRORS) else None


def _reason(exc: BaseException) -> str:
    """The first line of a Redis error, without redis-py's own repetition of the address."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.removeprefix("Error ").strip()


def _stdout_gone() -> int:
    # The reader went away (`| head`): say nothing more, and keep the interpreter's final
    # flush from failing on the closed pipe as well.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE
