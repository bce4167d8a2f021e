"""Unit tests: settings validation names the variable at fault."""

from __future__ import annotations

import pytest

from bridges.settings import RabbitSettings
from streamer.infra.errors import ConfigError
from streamer.infra.settings import Env
from streamer.worker.settings import WorkerSettings


def test_defaults() -> None:
    """With nothing set, the design's defaults apply."""
    s = WorkerSettings.from_env(Env({}))
    assert s.redis.stream_key == "notify:events"
    assert s.redis.consumer_group == "notify-workers"
    assert s.delivery.user_history_size == 1000
    assert s.consumer.max_deliveries == 5


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"BLOCK_MS": "soon"}, "BLOCK_MS"),
        ({"MAX_DELIVERIES": "0"}, "MAX_DELIVERIES"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"USER_HISTORY_SIZE": "-1"}, "USER_HISTORY_SIZE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A bad value fails with a message that starts with the variable's name."""
    with pytest.raises(ConfigError, match=f"^{variable}:"):
        WorkerSettings.from_env(Env(env))


def test_bool_parsing_is_strict() -> None:
    """Booleans accept the usual spellings and reject anything else."""
    assert Env({"X": "yes"}).bool("X", False) is True
    assert Env({"X": "0"}).bool("X", True) is False
    with pytest.raises(ConfigError, match=r"^X:"):
        Env({"X": "maybe"}).bool("X", False)


@pytest.mark.parametrize("default", [True, False])
def test_empty_bool_means_unset(default: bool) -> None:
    """An empty boolean is unset (its default), as for every other reader; it never means
    false."""
    assert Env({"X": ""}).bool("X", default) is default
    assert Env({"X": "  "}).bool("X", default) is default


def test_empty_declare_queues_keeps_declaring() -> None:
    """`RABBITMQ_DECLARE_QUEUES=` keeps the default (declare), not passive queues."""

    def declare(value: str) -> bool:
        return RabbitSettings.from_env(Env({"RABBITMQ_DECLARE_QUEUES": value})).declare_queues

    assert declare("") is True
    assert declare("false") is False
