"""Deployment files: the Dockerfile, docker-compose.yml and the Kubernetes manifests,
checked statically (no container engine or cluster is needed)."""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streamer.cli import build_parser
from streamer.infra.settings import Env
from streamer.ops.healthcheck import ADDRESSES, HEALTH_PATH
from tests.support.metrics import all_metrics
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
OPS = ROOT / "ops"
K8S = OPS / "k8s"
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASS$|TOKEN|_URL$")


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined; the
    first "stage" holds the global ARGs before the first FROM."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def args_of(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for name, args in stage if name == instruction]


def test_dockerfile_is_multi_stage_slim_and_unprivileged() -> None:
    """Every stage starts from BASE_IMAGE, by default the slim Python 3.12 image pinned by
    digest; the final stage runs as a non-root user, only copies built files and has no RUN
    step (build-time mounts would leave their mount points in it)."""
    preamble, *stages = dockerfile_stages()
    assert len(stages) >= 2
    (base,) = [a.split("=", 1)[1] for a in args_of(preamble, "ARG") if a.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"python:3\.12-slim-bookworm@sha256:[0-9a-f]{64}", base)
    for stage in stages:
        assert re.fullmatch(r"\$\{BASE_IMAGE\}( AS \w+)?", args_of(stage, "FROM")[0])
    final = stages[-1]
    (user,) = args_of(final, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert not args_of(final, "RUN")
    assert all("--from=" in c for c in args_of(final, "COPY")), "final stage copies built files"


def test_dockerfile_installs_the_locked_dependency_versions() -> None:
    """The build stage installs the dependencies with constraints.txt."""
    build = dockerfile_stages()[1]
    assert any("constraints.txt" in c for c in args_of(build, "COPY"))
    assert any("--constraint /stub/constraints.txt" in r for r in args_of(build, "RUN"))


def lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", ROOT / "ops/image/lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constraints_pin_every_runtime_dependency_at_the_tested_version() -> None:
    """constraints.txt pins exactly the runtime dependencies of streamer (and theirs) at the
    versions installed here, where the tests run; `just lock` rewrites it."""
    text = (ROOT / "constraints.txt").read_text()
    pins = dict(line.split("==") for line in text.splitlines() if not line.startswith("#"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert direct <= pins.keys(), "run `just lock`"
    lock = lock_script()
    assert text == lock.render(lock.runtime_closure()), "run `just lock`"


def test_dockerfile_stops_gracefully_and_checks_health() -> None:
    """STOPSIGNAL SIGTERM, `streamer` as the entry point, a HEALTHCHECK that runs
    `streamer healthcheck` (which probes /healthz) and every kind's health port exposed."""
    final = dockerfile_stages()[-1]
    assert args_of(final, "STOPSIGNAL") == ["SIGTERM"]
    (check,) = args_of(final, "HEALTHCHECK")
    assert check.endswith('CMD ["python", "-m", "streamer.ops.healthcheck"]')
    assert HEALTH_PATH == "/healthz"
    assert args_of(final, "ENTRYPOINT") == ['["streamer"]']
    assert args_of(final, "CMD") == ['["worker"]']
    env = Env({"JWT_SECRET": "x" * 32})
    (exposed,) = args_of(final, "EXPOSE")
    assert {int(p) for p in exposed.split()} == {port(env)[1] for port in ADDRESSES.values()}


def test_image_gets_every_file_the_packages_load() -> None:
    """.dockerignore admits the sources, and every non-Python file is declared package data
    (a non-editable install, as in the image, would lack it otherwise)."""
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"], "an allow-list"
    assert {"!pyproject.toml", "!constraints.txt", "!README.md", "!streamer/", "!bridges/"} <= set(
        ignore
    )
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    for package in ("streamer", "bridges"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc", ".typed"):
                relative = path.relative_to(ROOT / package)
                if relative.parts[0] == "__pycache__" or "__pycache__" in relative.parts:
                    continue
                globs = package_data.get(package, [])
                assert any(fnmatch(str(relative), g) for g in globs), f"{package}/{relative}"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((OPS / "docker-compose.yml").read_text())
    return data


def test_compose_runs_every_process_kind_from_the_image() -> None:
    """Two workers, a gateway, the RabbitMQ bridge and the publish API, built from the
    repository Dockerfile."""
    services = compose()["services"]
    commands = {name: s["command"] for name, s in services.items() if "build" in s}
    assert sorted(map(tuple, commands.values())) == [
        ("api",),
        ("bridge", "rabbitmq"),
        ("gateway",),
        ("worker",),
        ("worker",),
    ]
    for name, service in services.items():
        if "build" in service:
            assert (OPS / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            assert service["stop_signal"] == "SIGTERM" and service["stop_grace_period"]
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
    worker_ids = {services[n]["environment"]["WORKER_ID"] for n in ("worker-1", "worker-2")}
    assert len(worker_ids) == 2, "each worker is its own consumer"
    gateway = services["gateway"]["environment"]
    assert gateway["HEALTHCHECK_URL"] == f"http://127.0.0.1:{gateway['GATEWAY_PORT']}/healthz"
    api = services["api"]["environment"]
    assert api["API_HOST"] == "0.0.0.0", "reachable from the other containers"
    assert re.fullmatch(r"\$\{API_KEYS:\?[^}]*\}", api["API_KEYS"]), "keys from the environment"


def test_compose_infrastructure_is_persistent_and_health_checked() -> None:
    """Redis keeps an AOF on a volume; every infrastructure service has a healthcheck."""
    services = compose()["services"]
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for name in ("redis", "rabbitmq", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert services["bridge-rabbitmq"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_compose_holds_no_secret_values() -> None:
    """Passwords, secrets and credentialed URLs come from required environment variables."""
    for name, service in compose()["services"].items():
        for key, value in service.get("environment", {}).items():
            if re.search(r"SECRET|PASSWORD|PASS$|TOKEN", key) or "@" in str(value):
                assert re.search(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}.{key}"


def compose_command() -> list[str]:
    """`docker compose` (v2), else Debian's `docker-compose` (v1); neither fails the test."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy, "docker compose or docker-compose is required (.ci/run installs docker-compose)"
    return [legacy]


def test_compose_config_is_accepted_by_compose(tmp_path: Path) -> None:
    """`docker compose config` accepts the file (merge keys, conditions, required variables).
    Compose v1 predates the top-level `name`, so it gets a copy without it."""
    command = compose_command()
    path = OPS / "docker-compose.yml"
    if command[-1].endswith("docker-compose"):
        data = compose()
        del data["name"]
        path = tmp_path / "docker-compose.yml"
        path.write_text(yaml.safe_dump(data))
    env = {"JWT_SECRET": "x" * 32, "RABBITMQ_PASSWORD": "p", "GRAFANA_ADMIN_PASSWORD": "p",
           "API_KEYS": "k" * 24}  # fmt: skip
    result = subprocess.run(
        [*command, "-f", str(path), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr


def test_compose_redis_has_a_memory_limit_and_alerts_reach_alertmanager() -> None:
    """noeviction comes with maxmemory (refused writes, not an OOM kill); Prometheus sends
    alerts to the compose Alertmanager, whose config amtool accepts."""
    services = compose()["services"]
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1].endswith(("mb", "gb"))
    assert "./alertmanager:/etc/alertmanager:ro" in services["alertmanager"]["volumes"]
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    amtool = shutil.which("amtool")
    assert amtool, "amtool is required (Debian package prometheus-alertmanager; .ci/run)"
    checked = subprocess.run(
        [amtool, "check-config", str(OPS / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


VARIANTS = ("", "monitoring", "keda")


@functools.cache
def rendered(variant: str = "") -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize ops/k8s[/variant]`: the objects a cluster would get."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is required to render ops/k8s (it renders kustomizations offline)"
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def k8s_documents(variant: str = "") -> list[dict[str, Any]]:
    return list(rendered(variant))


def of_kind(kind: str, variant: str = "") -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered(variant) if d["kind"] == kind}


def deployments(variant: str = "") -> dict[str, dict[str, Any]]:
    return of_kind("Deployment", variant)


def pod_labels(variant: str = "") -> dict[str, dict[str, str]]:
    return {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments(variant).items()}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_k8s_deployments_run_each_kind_with_probes_and_graceful_stop() -> None:
    """Worker, gateway and bridge: liveness on /livez (a Redis outage restarts nothing),
    readiness on /readyz, a startupProbe for slow starts, a grace period, non-root."""
    found = deployments()
    args = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"] for name, d in found.items()
    }
    assert args == {
        "streamer-worker": ["worker"],
        "streamer-gateway": ["gateway"],
        "streamer-bridge-rabbitmq": ["bridge", "rabbitmq"],
    }
    paths = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for name, deployment in found.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in paths.items():
            check = container[probe]["httpGet"]
            assert check["path"] == path and check["port"] in ports, f"{name} {probe}"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) in ports.values(), name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_secrets_are_references_only() -> None:
    """Credentials come from secretKeyRef; no manifest holds a Secret or a literal value."""
    for variant in VARIANTS:
        docs = k8s_documents(variant)
        assert not [d for d in docs if d["kind"] == "Secret"]
        for deployment in deployments(variant).values():
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                for var in container.get("env", []):
                    if SECRET_NAME.search(var["name"]):
                        assert "secretKeyRef" in var["valueFrom"], var["name"]
        for config in (d for d in docs if d["kind"] == "ConfigMap"):
            assert not [k for k in config["data"] if SECRET_NAME.search(k)]


def test_k8s_gateway_service_and_disruption_budgets_select_their_pods() -> None:
    """The gateway Service and each PodDisruptionBudget select existing pods and ports."""
    pods = pod_labels()
    service = of_kind("Service")["streamer-gateway"]
    assert selects(service["spec"]["selector"], pods["streamer-gateway"])
    gateway = deployments()["streamer-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in gateway["ports"]}
    covered = {
        name
        for b in of_kind("PodDisruptionBudget").values()
        for name, labels in pods.items()
        if selects(b["spec"]["selector"]["matchLabels"], labels)
    }
    assert {"streamer-worker", "streamer-gateway"} <= covered


def test_k8s_variants_render_into_one_namespace() -> None:
    """ops/k8s, ops/k8s/monitoring and ops/k8s/keda render; everything is namespaced
    `streamer` and labelled part-of creativeflow; only the variants add their kinds."""
    kinds = {v: sorted(d["kind"] for d in rendered(v)) for v in VARIANTS}
    assert kinds[""].count("Deployment") == 3
    assert set(kinds["monitoring"]) - set(kinds[""]) == {"ServiceMonitor", "PrometheusRule"}
    assert set(kinds["keda"]) ^ set(kinds[""]) == {"ScaledObject", "HorizontalPodAutoscaler"}
    for variant in VARIANTS:
        for doc in rendered(variant):
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "streamer", (variant, doc["kind"])
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "creativeflow"


def test_k8s_worker_autoscaling_targets_the_worker_on_an_exported_metric() -> None:
    """The HPA (and, in the KEDA variant, the ScaledObject) scale the worker Deployment on
    the lag the workers export, within what partitions can use."""
    (hpa,) = of_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "streamer-worker",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] in all_metrics()
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= 16
    (scaled,) = of_kind("ScaledObject", "keda").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments("keda")
    (trigger,) = scaled["spec"]["triggers"]
    assert re.findall(r"streamer_\w+", trigger["metadata"]["query"]) == [
        "streamer_stream_lag_entries"
    ]


def test_k8s_network_policies_let_each_kind_serve_and_reach_only_what_it_needs() -> None:
    """Every Deployment's pods have a policy for both directions; ingress names only ports
    the pod declares; egress allows DNS and Redis (and AMQP for the bridge, HTTPS for the
    worker's push providers)."""
    pods = pod_labels()
    policies = of_kind("NetworkPolicy")
    for name, labels in pods.items():
        (policy,) = [
            p for p in policies.values() if selects(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        container = deployments()[name]["spec"]["template"]["spec"]["containers"][0]
        declared = {p["name"] for p in container["ports"]}
        ingress = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
        assert ingress <= declared and ingress, name
        egress = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
        assert {53, 6379} <= egress, name
    worker = policies["streamer-worker"]["spec"]["egress"]
    assert 443 in {p["port"] for rule in worker for p in rule["ports"]}
    bridge = policies["streamer-bridge-rabbitmq"]["spec"]["egress"]
    assert 5672 in {p["port"] for rule in bridge for p in rule["ports"]}


def test_k8s_service_monitor_scrapes_every_process_kind() -> None:
    """The ServiceMonitor selects the headless metrics Service, which covers every pod
    (unready ones too) on the port each kind serves /metrics on."""
    (monitor,) = of_kind("ServiceMonitor", "monitoring").values()
    services = [
        s
        for s in of_kind("Service", "monitoring").values()
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    (service,) = services
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == set(ports)
    for name, labels in pod_labels("monitoring").items():
        assert selects(service["spec"]["selector"], labels), name
        container = deployments("monitoring")[name]["spec"]["template"]["spec"]["containers"][0]
        assert {p["name"] for p in container["ports"]} & set(ports.values()), name


def test_k8s_prometheus_rule_carries_the_alerts_of_alerts_yml() -> None:
    """The PrometheusRule's groups are exactly ops/prometheus/alerts.yml's."""
    (rule,) = of_kind("PrometheusRule", "monitoring").values()
    alerts = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


def test_compose_and_k8s_commands_are_streamer_commands() -> None:
    """Every process command of compose and Kubernetes parses with the real `streamer` CLI."""
    parser = build_parser()
    commands = [s["command"] for s in compose()["services"].values() if "build" in s]
    commands += [
        c["args"]
        for d in deployments().values()
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    for command in commands:
        assert callable(parser.parse_args(command).handler), command
