"""Every metric is named by the convention, has bounded labels and is documented."""

from __future__ import annotations

import re

from tests.support.metrics import all_metrics
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
NAME = re.compile(
    r"^streamer_(worker|stream|gateway|bridge|push|api)_[a-z][a-z0-9_]*_"
    r"(total|seconds|entries|sockets|bytes|ratio|partitions)$"
)
# Label values must come from small fixed sets. A label for a user, token, event, consumer
# or gateway id would create one series per value, so none of those may appear here.
BOUNDED_LABELS = {
    "route",  # the API's route templates (unknown paths: "other"), never a raw path
    "component",
    "version",
    "source",
    "channel",
    "outcome",
    "reason",
    "code",
    "status",
    "recovered",
    "bridge",
    "peer",
    "provider",
    "change",
}


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_metric_names_follow_the_convention() -> None:
    """Names are streamer_<subsystem>_<name>_<unit|total>; counters end in _total only."""
    found = all_metrics()
    assert len(found) >= 30
    for name, metric in found.items():
        # The one info-style series (Prometheus' `_info` convention) names no subsystem.
        assert NAME.match(name) or name == "streamer_build_info", name
        is_counter = metric.describe()[0].type == "counter"
        assert name.endswith("_total") == is_counter, name


def test_labels_are_bounded() -> None:
    """Only labels with small fixed value sets are used (never ids or tokens)."""
    for name, metric in all_metrics().items():
        labels = set(metric._labelnames)
        assert labels <= BOUNDED_LABELS, f"{name}: {labels - BOUNDED_LABELS}"


def test_readme_documents_every_metric_and_no_other() -> None:
    """The README Metrics table has one row per metric with its type and labels."""
    section = readme_section("Metrics")
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `(streamer_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|", section, re.M)
    }
    found = all_metrics()
    assert sorted(rows) == sorted(found)
    for name, (kind, labels) in rows.items():
        family = found[name].describe()[0]
        assert kind == family.type, name
        documented = set(re.findall(r"`(\w+)`", labels))
        assert documented == set(found[name]._labelnames), name


def test_readme_places_metrics_and_deployment_before_layout() -> None:
    """The operator sections come before the Layout section of the README."""
    text = (ROOT / "README.md").read_text()
    assert text.index("\n## Metrics\n") < text.index("\n## Deployment\n")
    assert text.index("\n## Deployment\n") < text.index("\n## Layout\n")
