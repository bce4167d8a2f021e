"""Argument types shared by the commands: nonsense is refused while parsing (exit 2, one
line naming the argument), before anything connects or writes."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from streamer.contract.event import valid_user_id


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer argument type that refuses values below ``minimum``."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def user_id(text: str) -> str:
    """A user id by the one rule of the event schema (``valid_user_id``)."""
    if not valid_user_id(text):
        raise argparse.ArgumentTypeError(
            f"not a valid user id: {text!r} (1-256 characters, no spaces, control "
            "characters or braces)"
        )
    return text


def topic(text: str) -> str:
    """A topic name: the same characters as a user id (the event schema's ``Topic``)."""
    if not valid_user_id(text):
        raise argparse.ArgumentTypeError(
            f"not a valid topic: {text!r} (1-256 characters, no spaces, control characters "
            "or braces)"
        )
    return text
