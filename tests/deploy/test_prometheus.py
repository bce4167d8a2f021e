"""Prometheus config, alert rules and the Grafana dashboard: valid for promtool, alerts behave
as their unit tests say, and every query names a metric streamer really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.metrics import all_metrics
from tests.support.paths import REPO_ROOT

OPS = REPO_ROOT / "ops"
PROMETHEUS = OPS / "prometheus"
GRAFANA = OPS / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streamer.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is required (Debian package prometheus; .ci/run installs it)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def exported_series() -> set[str]:
    """Every series name streamer exposes (histograms as _bucket/_count/_sum)."""
    names = set()
    for name, metric in all_metrics().items():
        if metric.describe()[0].type == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        else:
            names.add(name)
    return names


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\bstreamer_[a-z0-9_]+", expr))


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_promtool_accepts_config_and_rules() -> None:
    """`promtool check config` (which loads alerts.yml too) and `check rules` pass."""
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_alert_unit_tests_pass() -> None:
    """The alerts fire (and stay quiet) exactly as alerts_test.yml expects."""
    result = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist() -> None:
    """Lag growing, DLQ growing, no worker, push failures, gateway down, slow clients."""
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "StreamerLagGrowing",
        "StreamerDLQGrowing",
        "StreamerNoLiveWorker",
        "StreamerPushFailureRatio",
        "StreamerGatewayDown",
        "StreamerManySlowClientCloses",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alerts_and_dashboard_query_only_exported_metrics() -> None:
    """A renamed or removed metric cannot silently blank a panel or disarm an alert."""
    exported = exported_series()
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    used = set().union(*(referenced(e) for e in exprs))
    assert used - exported == set()
    assert len(used) >= 25


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query parses: promtool checks them as recording rules."""
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    rules = [
        {"record": f"dashboard:query_{n}", "expr": e.replace("$__rate_interval", "5m")}
        for n, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_covers_the_operator_questions() -> None:
    """Throughput, latency percentiles per channel, lag, pending, DLQ, sockets, push."""
    panels = dashboard_panels()
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("consumed", "latency", "lag", "pending", "dlq", "sockets", "push outcomes"):
        assert topic in titles, topic
    latency = next(p for p in panels if p["title"].startswith("End-to-end delivery latency"))
    exprs = " ".join(t["expr"] for t in latency["targets"])
    quantiles = set(re.findall(r"histogram_quantile\(([\d.]+)", exprs))
    assert quantiles == {"0.5", "0.95", "0.99"}
    assert all("by (channel, le)" in t["expr"] for t in latency["targets"])
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    """Panels use the provisioned datasource uid; the provider path is where compose mounts."""
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert {p["datasource"]["uid"] for p in dashboard_panels()} == {source["uid"]}
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/streamer.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((OPS / "docker-compose.yml").read_text())
    assert f"./grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]


def test_prometheus_scrapes_every_streamer_process_of_compose() -> None:
    """Each worker, gateway, bridge and API service of compose is a target on its metrics
    port."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    services = yaml.safe_load((OPS / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        command = service.get("command", [])
        if command[:1] in (["worker"], ["bridge"]):
            assert f"{name}:{service['environment']['METRICS_PORT']}" in targets, name
        if command == ["gateway"]:
            assert f"{name}:{service['environment']['GATEWAY_PORT']}" in targets, name
        if command == ["api"]:
            assert f"{name}:{service['environment']['API_PORT']}" in targets, name


def alert_tests() -> list[dict[str, Any]]:
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    return [check for case in cases for check in case["alert_rule_test"]]


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """alerts_test.yml makes each alert of alerts.yml fire at least once (and promtool runs
    it: test_alert_unit_tests_pass)."""
    firing = {check["alertname"] for check in alert_tests() if check.get("exp_alerts")}
    assert {rule["alert"] for rule in alert_rules()} - firing == set()


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's section headings."""
    text = (REPO_ROOT / "docs" / "runbooks.md").read_text()
    headings = re.findall(r"^#{2,3} (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_links_its_runbook_section() -> None:
    """Each alert's runbook_url is docs/runbooks.md#<a section that exists>."""
    anchors = runbook_anchors()
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md" and anchor in anchors, f"{rule['alert']}: {url}"


def test_alerts_and_panels_do_not_depend_on_scrape_job_names() -> None:
    """Under Kubernetes annotation scraping or ServiceMonitors the compose job names do not
    exist: process kinds are found by streamer_build_info{component=…}."""
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    assert not [e for e in exprs if "job=" in e.replace(" ", "")]
    presence = [
        r["expr"]
        for r in alert_rules()
        if r["alert"] in ("StreamerNoLiveWorker", "StreamerNoGateway")
    ]
    assert all("streamer_build_info{component=" in e for e in presence)
