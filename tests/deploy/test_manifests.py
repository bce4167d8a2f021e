"""Deployment files: the Dockerfile, docker-compose.yml and the Kubernetes manifests,
checked statically (no container engine or cluster is needed)."""

from __future__ import annotations

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
    """Two workers, a gateway and the RabbitMQ bridge, built from the repository Dockerfile."""
    services = compose()["services"]
    commands = {name: s["command"] for name, s in services.items() if "build" in s}
    assert sorted(map(tuple, commands.values())) == [
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


def test_compose_config_when_docker_compose_is_available(tmp_path: Path) -> None:
    """With a working `docker compose`, `docker compose config` accepts the file; without
    one the YAML must still parse with its merge keys resolved."""
    services = compose()["services"]
    assert services["worker-1"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, timeout=20)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        return
    env = {"JWT_SECRET": "x" * 32, "RABBITMQ_PASSWORD": "p", "GRAFANA_ADMIN_PASSWORD": "p"}
    result = subprocess.run(
        [docker, "compose", "-f", str(OPS / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return docs


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Deployment"}


def test_k8s_deployments_run_each_kind_with_probes_and_graceful_stop() -> None:
    """Worker, gateway and bridge: probes on a declared port, a grace period, non-root."""
    found = deployments()
    args = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"] for name, d in found.items()
    }
    assert args == {
        "streamer-worker": ["worker"],
        "streamer-gateway": ["gateway"],
        "streamer-bridge-rabbitmq": ["bridge", "rabbitmq"],
    }
    for name, deployment in found.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] == "/healthz" and check["port"] in ports, f"{name} {probe}"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) in ports.values(), name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_secrets_are_references_only() -> None:
    """Credentials come from secretKeyRef; no manifest holds a Secret or a literal value."""
    docs = k8s_documents()
    assert not [d for d in docs if d["kind"] == "Secret"]
    for deployment in deployments().values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for var in container.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "secretKeyRef" in var["valueFrom"], var["name"]
    for config in (d for d in docs if d["kind"] == "ConfigMap"):
        assert not [k for k in config["data"] if SECRET_NAME.search(k)]


def test_k8s_gateway_service_and_disruption_budgets_select_their_pods() -> None:
    """The gateway Service and each PodDisruptionBudget select existing pods and ports."""
    docs = k8s_documents()
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments().items()}
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["selector"].items() <= pods["streamer-gateway"].items()
    gateway = deployments()["streamer-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in gateway["ports"]}
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    covered = {
        name
        for b in budgets
        for name, labels in pods.items()
        if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
    }
    assert {"streamer-worker", "streamer-gateway"} <= covered


def test_k8s_kustomization_builds_when_kubectl_is_available() -> None:
    """`kubectl kustomize` renders the same objects the manifests declare (when installed)."""
    kinds = sorted(d["kind"] for d in k8s_documents())
    assert kinds.count("Deployment") == 3
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in rendered) == kinds
    assert {d["metadata"].get("namespace") for d in rendered if d["kind"] != "Namespace"} == {
        "streamer"
    }


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
