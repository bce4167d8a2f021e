"""A private Redis Cluster: three masters (or any number; no replicas) on free loopback ports.

Each node's cluster bus listens on its port + 10000, so a port is taken only when both are
free, and below 55536. Nodes are plain ``RedisServer`` processes started with cluster mode on;
``redis-cli --cluster create`` assigns the slots.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import TypeVar

from tests.support.gateway import GatewayProcess
from tests.support.polling import wait_for
from tests.support.processes import StreamerProcess
from tests.support.servers import RedisServer

P = TypeVar("P", bound=StreamerProcess)

BUS_OFFSET = 10000
_LOWEST, _HIGHEST = 20000, 55535


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A port free on loopback whose cluster-bus port (+10000) is free too."""
    for _ in range(1000):
        port = random.randint(_LOWEST, _HIGHEST - BUS_OFFSET)
        if port not in taken and _free(port) and _free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNodeServer(RedisServer):
    """A redis-server with cluster mode on; ``--cluster-config-file`` in its own directory.
    With ``tls`` (a directory holding cert.pem and key.pem) it speaks TLS only, to clients
    and on the cluster bus."""

    def __init__(
        self, workdir: Path, port: int, *, appendonly: bool = False, tls: Path | None = None
    ):
        super().__init__(workdir, port, appendonly=appendonly)
        self.tls = tls

    def extra_args(self) -> list[str]:
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.workdir / "nodes.conf"),
            "--cluster-node-timeout",
            "2000",
        ]
        if self.tls is not None:
            args += ["--tls-port", str(self.port), "--port", "0", "--tls-cluster", "yes"]
            args += ["--tls-cert-file", str(self.tls / "cert.pem")]
            args += ["--tls-key-file", str(self.tls / "key.pem")]
            args += ["--tls-ca-cert-file", str(self.tls / "cert.pem"), "--tls-auth-clients", "no"]
        return args

    def _ping(self) -> bool:
        if self.tls is None:
            return super()._ping()
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.workdir / 'redis.log'}")
        return (
            b"PONG"
            in subprocess.run(
                ["redis-cli", *tls_cli_args(self.tls), "-p", str(self.port), "PING"],
                capture_output=True,
                timeout=5,
            ).stdout
        )


def tls_cli_args(tls: Path | None) -> list[str]:
    return [] if tls is None else ["--tls", "--cacert", str(tls / "cert.pem")]


def self_signed(directory: Path) -> Path:
    """cert.pem and key.pem for 127.0.0.1 in ``directory`` (the certificate is its own CA)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = str(directory / "key.pem"), str(directory / "cert.pem")
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subprocess.run(
        [*command, *subject, "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return directory


class RedisClusterServers:
    def __init__(
        self, workdir: Path, masters: int = 3, *, appendonly: bool = False, tls: bool = False
    ) -> None:
        self.workdir = workdir
        self.tls = self_signed(workdir / "tls") if tls else None
        taken: set[int] = set()
        self.nodes: list[ClusterNodeServer] = []
        for i in range(masters):
            port = cluster_port(taken)
            taken.add(port)
            node = ClusterNodeServer(
                workdir / f"node{i}", port, appendonly=appendonly, tls=self.tls
            )
            self.nodes.append(node)

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        if self.tls is None:
            return f"redis+cluster://{nodes}"
        return f"rediss+cluster://{nodes}?ssl_ca_certs={self.tls / 'cert.pem'}"

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli must be installed for the cluster tests"
        if len(self.nodes) == 1:  # `--cluster create` wants three masters
            self.command(self.nodes[0], "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        else:
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [cli, *tls_cli_args(self.tls), "--cluster", "create", *addresses, "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=30,
            )
        wait_for(self._ok, timeout=20, interval=0.1, what="cluster_state:ok on every node")
        return self

    def wait_ok(self, within_s: float = 20) -> None:
        wait_for(self._ok, timeout=within_s, interval=0.1, what="cluster_state:ok on every node")

    def _ok(self) -> bool:
        return all(b"cluster_state:ok" in self.command(n, "CLUSTER", "INFO") for n in self.nodes)

    def command(self, node: RedisServer, *args: str) -> bytes:
        """One command with redis-cli on ``node``; its raw output."""
        result = subprocess.run(
            ["redis-cli", *tls_cli_args(self.tls), "-p", str(node.port), *args],
            capture_output=True,
            timeout=10,
        )
        return result.stdout

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()


# Short timings so a worker's death and the take-over fit in seconds.
TIMINGS = {
    "BLOCK_MS": "200",
    "WORKER_HEARTBEAT_MS": "300",
    "WORKER_DEAD_AFTER_MS": "1500",
    "WORKER_LEASE_TTL_MS": "1500",
    "CLAIM_IDLE_MS": "1500",
    "RETRY_BASE_MS": "100",
    "READ_COUNT": "200",
    "GATEWAY_HEARTBEAT_MS": "500",
    "GATEWAY_DEAD_AFTER_MS": "3000",
}


class ClusterStack:
    """Workers and gateways of one test on the private cluster, under the test's own key
    prefix (``env``); every process is stopped at ``close()``."""

    def __init__(self, cluster: RedisClusterServers, env: dict[str, str], workdir: Path) -> None:
        self.cluster = cluster
        self.env = {**env, **TIMINGS}
        self.workdir = workdir
        self.processes: list[StreamerProcess] = []
        self._intended: set[int] = set()  # pids the test stopped or killed itself

    def worker(self, name: str, **extra: str) -> StreamerProcess:
        env = {**self.env, "WORKER_ID": name, **extra}
        return self._track(StreamerProcess(["worker"], env, self.workdir / f"{name}.log").start())

    def gateway(self, name: str) -> GatewayProcess:
        extra = {k: v for k, v in self.env.items() if k.startswith(("GATEWAY_", "KEY_", "LOG_"))}
        gateway = GatewayProcess(self.cluster.url, name, self.workdir, **extra)
        return self._track(gateway.start())

    def _track(self, process: P) -> P:
        self.processes.append(process)
        return process

    def stop(self, process: StreamerProcess) -> int:
        """SIGTERM and wait, as the test's own doing (not a crash)."""
        self._intended.add(process.pid)
        return process.stop()

    def kill(self, process: StreamerProcess) -> None:
        """SIGKILL, as the test's fault (not a crash)."""
        self._intended.add(process.pid)
        process.kill()

    def crashes(self) -> list[str]:
        """Processes that exited by themselves (not stopped or killed by the test)."""
        return [
            f"{' '.join(p.argv[3:])} exited with {p.process.returncode}:\n{p.output(1500)}"
            for p in self.processes
            if p.popen is not None and p.popen.poll() is not None and p.pid not in self._intended
        ]

    def close(self) -> None:
        for process in self.processes:
            if process.running():
                process.signal(signal.SIGTERM)
        for process in self.processes:
            process.stop(timeout=10)


def migrate_slot(cluster: RedisClusterServers, key: str, target: RedisServer) -> RedisServer:
    """Move the slot of ``key`` to ``target`` while clients keep writing to it: IMPORTING on
    the target, MIGRATING on the source, MIGRATE its keys in batches, then SETSLOT NODE on
    every master. Returns the node that had the slot."""
    slot = int(cluster.command(cluster.nodes[0], "CLUSTER", "KEYSLOT", key))
    ids = {n.port: cluster.command(n, "CLUSTER", "MYID").strip().decode() for n in cluster.nodes}
    source = slot_owner(cluster, key)
    assert source is not target, "the slot is already on the target"
    cluster.command(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source.port])
    cluster.command(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target.port])
    while keys := cluster.command(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
        reply = cluster.command(
            source, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000",
            "KEYS", *(k.decode() for k in keys),
        )  # fmt: skip
        assert reply.strip() in (b"OK", b"NOKEY"), reply
    for node in (target, source, *cluster.nodes):
        cluster.command(node, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])
    return source


def slot_owner(cluster: RedisClusterServers, key: str) -> RedisServer:
    """The master serving the slot of ``key``."""
    slot = int(cluster.command(cluster.nodes[0], "CLUSTER", "KEYSLOT", key))
    return next(n for n in cluster.nodes if _owns(cluster, n, slot))


def _owns(cluster: RedisClusterServers, node: RedisServer, slot: int) -> bool:
    for line in cluster.command(node, "CLUSTER", "NODES").decode().splitlines():
        fields = line.split()
        if "myself" not in fields[2]:
            continue
        for part in fields[8:]:
            low, _, high = part.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return True
    return False
