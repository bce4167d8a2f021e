"""A private Redis Cluster: three masters (no replicas) on free loopback ports.

Each node's cluster bus listens on its port + 10000, so a port is taken only when both are
free, and below 55536. Nodes are plain ``RedisServer`` processes started with cluster mode on;
``redis-cli --cluster create`` assigns the slots.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
from pathlib import Path

from tests.support.polling import wait_for
from tests.support.servers import RedisServer

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
    """A redis-server with cluster mode on; ``--cluster-config-file`` in its own directory."""

    def extra_args(self) -> list[str]:
        return [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.workdir / "nodes.conf"),
            "--cluster-node-timeout",
            "2000",
        ]


class RedisClusterServers:
    def __init__(self, workdir: Path, masters: int = 3) -> None:
        taken: set[int] = set()
        self.nodes: list[ClusterNodeServer] = []
        for i in range(masters):
            port = cluster_port(taken)
            taken.add(port)
            self.nodes.append(ClusterNodeServer(workdir / f"node{i}", port))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli must be installed for the cluster tests"
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_for(self._ok, timeout=20, interval=0.1, what="cluster_state:ok on every node")
        return self

    def _ok(self) -> bool:
        return all(b"cluster_state:ok" in self.command(n, "CLUSTER", "INFO") for n in self.nodes)

    def command(self, node: RedisServer, *args: str) -> bytes:
        """One command with redis-cli on ``node``; its raw output."""
        result = subprocess.run(
            ["redis-cli", "-p", str(node.port), *args], capture_output=True, timeout=10
        )
        return result.stdout

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
