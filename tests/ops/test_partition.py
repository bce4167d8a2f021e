"""`streamer partition`: the partition and stream of a user or topic, as the workers see it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from streamer.contract.event import NotificationPayload
from streamer.contract.keys import Keys
from streamer.infra.settings import Env, RedisSettings
from streamer.ops import partition


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    partition.register(parser.add_subparsers())
    assert partition.handle(parser.parse_args(["partition", *argv, "--json"])) == 0
    found: dict[str, object] = json.loads(capsys.readouterr().out)
    return found


@pytest.mark.parametrize("count", ["1", "16", "7"])
def test_users_and_topics_map_to_the_stream_ingress_for_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], count: str
) -> None:
    """For any partition count and prefix, the printed stream is the one Keys.ingress_for
    gives an event of that user (or topic), and the index is that partition's."""
    monkeypatch.setenv("INGRESS_PARTITIONS", count)
    monkeypatch.setenv("KEY_PREFIX", "app:")
    keys = Keys.from_settings(RedisSettings.from_env(Env()))
    for n in range(40):
        user, topic = f"user-{n}", f"topic.{n}"
        for flag, name, event in (
            ("--user", user, NotificationPayload(user_id=user, event_type="x")),
            ("--topic", topic, NotificationPayload(topic=topic, event_type="x")),
        ):
            found = run(monkeypatch, capsys, flag, name)
            stream = keys.ingress_for(event)
            assert found["stream"] == stream and str(found["stream"]).startswith("app:{")
            assert keys.partitions[int(str(found["partition"]))].stream == stream
            assert found["partitions"] == int(count)


def test_the_command_needs_no_redis_and_refuses_bad_names() -> None:
    """`streamer partition --user U` prints the partition and stream with no Redis reachable;
    an invalid user id is exit 2 with one line."""
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"}
    ok = subprocess.run(
        [sys.executable, "-m", "streamer", "partition", "--user", "u42"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    keys = Keys.from_settings(RedisSettings.from_env(Env({})))
    index = keys.of_user("u42").index
    assert ok.returncode == 0 and ok.stdout.splitlines() == [
        f"user u42: partition {index} of {keys.partition_count}",
        f"stream {keys.ingress('u42')}",
        f"dlq    {keys.of_user('u42').dlq}",
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "streamer", "partition", "--topic", "a b"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "not a valid topic" in bad.stderr
