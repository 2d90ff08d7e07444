"""A real Redis Cluster on 127.0.0.1: several ``redis-server`` processes in cluster mode.

For tests and local trials of freshrec against a cluster (production points
``redis.url`` at its own cluster and sets ``redis.cluster = true``). The masters split the
16,384 slots evenly; there are no replicas. Ready means every node reports
``cluster_state:ok`` and knows every other node, not that the ports accept.
"""

from __future__ import annotations

import atexit
import random
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from worker.tools.embedded import ManagedProcess, redis_binary, redis_ready

__all__ = ["EmbeddedCluster"]

SLOTS = 16384
_BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def cluster_port() -> int:
    """A port whose cluster-bus twin (port + 10000) is free too, both on 127.0.0.1.

    Both lie below Linux's ephemeral range (32768+), where the OS hands out the ports other
    tests ask for, so the pair is not taken from under a running test.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32768 - _BUS_OFFSET)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + _BUS_OFFSET))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


class EmbeddedCluster:
    """``masters`` cluster-mode Redis servers with the slots assigned, as a context manager.

    >>> with EmbeddedCluster(3) as cluster:  # doctest: +SKIP
    ...     cluster.url
    'redis://127.0.0.1:40125/0'
    """

    def __init__(self, masters: int = 3, workdir: str | Path | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="freshrec-cluster-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.nodes: list[ManagedProcess] = []
        for k in range(masters):
            port = cluster_port()
            node_dir = self.workdir / f"node-{k}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(ManagedProcess(f"redis-cluster-{k}", [
                redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "5000", "--dir", str(node_dir)],
                port, node_dir / "redis.log", redis_ready))

    @property
    def url(self) -> str:
        """A seed URL (any node); cluster clients discover the rest."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, ready_timeout_s: float = 60.0) -> EmbeddedCluster:
        """Start the nodes, assign slots, join them, and wait until the cluster is ok."""
        atexit.register(self.stop)
        try:
            for node in self.nodes:
                node.start()
            clients: list[Any] = [redis.Redis(port=n.port) for n in self.nodes]
            per = SLOTS // len(clients)
            for k, client in enumerate(clients):
                last = SLOTS if k == len(clients) - 1 else (k + 1) * per
                client.execute_command("CLUSTER ADDSLOTS", *range(k * per, last))
            for client in clients[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
            self._wait_ok(clients, ready_timeout_s)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, clients: list[Any], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        infos: list[Any] = []
        while time.monotonic() < deadline:
            infos = [c.execute_command("CLUSTER INFO") for c in clients]
            if all(str(i.get("cluster_state")) == "ok"
                   and int(i.get("cluster_known_nodes", 0)) == len(clients) for i in infos):
                return
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster not ok after {timeout_s} s: {infos}")

    def stop(self) -> None:
        """Stop every node (idempotent)."""
        for node in self.nodes:
            node.stop()
        atexit.unregister(self.stop)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
