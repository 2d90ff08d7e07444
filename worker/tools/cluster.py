"""A real Redis Cluster on 127.0.0.1: several ``redis-server`` processes in cluster mode.

For tests and local trials of freshrec against a cluster (production points
``redis.url`` at its own cluster and sets ``redis.cluster = true``). The masters split the
16,384 slots evenly; ``replicas`` more nodes follow each master, so a master can be lost
and its replica promoted. Ready means every node reports ``cluster_state:ok`` and knows
every other node, and every replica's link to its master is up, not that the ports accept.
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

    def __init__(self, masters: int = 3, workdir: str | Path | None = None,
                 replicas: int = 0) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="freshrec-cluster-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.masters = masters
        self.nodes: list[ManagedProcess] = []  # the masters first, then their replicas
        for k in range(masters * (1 + replicas)):
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
            masters = clients[:self.masters]
            per = SLOTS // len(masters)
            for k, client in enumerate(masters):
                last = SLOTS if k == len(masters) - 1 else (k + 1) * per
                client.execute_command("CLUSTER ADDSLOTS", *range(k * per, last))
            for client in clients[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
            self._wait_ok(clients, ready_timeout_s, 1)
            for k, client in enumerate(clients[self.masters:]):
                master = masters[k % self.masters].execute_command("CLUSTER MYID")
                client.execute_command("CLUSTER REPLICATE", master)
            self._wait_ok(clients, ready_timeout_s, len(self.nodes) // self.masters)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, clients: list[Any], timeout_s: float, per_shard: int) -> None:
        deadline = time.monotonic() + timeout_s
        infos: list[Any] = []
        while time.monotonic() < deadline:
            infos = [c.execute_command("CLUSTER INFO") for c in clients]
            links = [c.info("replication") for c in clients[self.masters:]]
            if all(str(i.get("cluster_state")) == "ok"
                   and int(i.get("cluster_known_nodes", 0)) == len(clients) for i in infos) \
                    and all(link.get("role") != "slave"
                            or link.get("master_link_status") == "up" for link in links) \
                    and all(len(shard) - 2 == per_shard
                            for c in clients for shard in c.execute_command("CLUSTER SLOTS")):
                return
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster not ok after {timeout_s} s: {infos}")

    def master_of(self, key: str) -> tuple[ManagedProcess, ManagedProcess | None]:
        """The node serving ``key``'s slot, and a replica of it (None without replicas)."""
        slot = int(_call(self.nodes[0], "CLUSTER KEYSLOT", key))
        for shard in _call(self.nodes[0], "CLUSTER SLOTS"):
            if int(shard[0]) <= slot <= int(shard[1]):
                ports = [int(node[1]) for node in shard[2:]]
                by_port = {n.port: n for n in self.nodes}
                master = by_port[ports[0]]
                replica = by_port[ports[1]] if len(ports) > 1 else None
                return master, replica
        raise LookupError(f"no node serves slot {slot}")

    def wait_ok(self, timeout_s: float = 60.0, master: ManagedProcess | None = None) -> None:
        """Wait until the nodes still running agree the cluster is ok (after a failover).

        ``master``: also wait until that node (a replica whose master was lost) is a master.
        Until then the cluster may still say ok, not having noticed the loss yet.
        """
        if master is not None:
            deadline = time.monotonic() + timeout_s
            while _call(master, "INFO", "replication").get("role") != "master":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {master.port} not promoted in {timeout_s} s")
                time.sleep(0.1)
        alive = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        clients: list[Any] = [redis.Redis(port=n.port) for n in alive]
        deadline = time.monotonic() + timeout_s
        infos: list[Any] = []
        try:
            while time.monotonic() < deadline:
                infos = [c.execute_command("CLUSTER INFO") for c in clients]
                if all(str(i.get("cluster_state")) == "ok" for i in infos):
                    return
                time.sleep(0.1)
        finally:
            for c in clients:
                c.close()
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


def _call(node: ManagedProcess, *command: Any) -> Any:
    client: Any = redis.Redis(port=node.port)
    try:
        return client.execute_command(*command)
    finally:
        client.close()
