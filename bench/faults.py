"""The soak's fault schedule: each fault a real one, injected from outside the worker.

* a slow Redis: the worker reaches Redis through :class:`~worker.tools.tcp_proxy.TcpProxy`,
  which delays every chunk for a while (inside the command timeout);
* a Redis failover: a second ``redis-server`` replicates the worker's; for a while the two
  swap roles, so the worker's server answers every write ``READONLY``, then swap back;
* a full checkpoint disk: the worker's file-size limit (RLIMIT_FSIZE, set with prlimit)
  drops to one byte, so every checkpoint write fails as on a full disk, then is lifted;
* a broker outage with uncommitted data: the broker process is frozen (SIGSTOP) while the
  worker holds work it has not committed, then thawed (SIGCONT), its log intact.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from worker.tools.embedded import ManagedProcess, redis_binary, redis_ready, restartable_port
from worker.tools.tcp_proxy import TcpProxy

__all__ = ["FaultLog", "RedisPair", "freeze", "limit_files"]


@dataclass
class FaultLog:
    """What was injected, when (seconds into the run), for the soak's summary."""

    start: float = field(default_factory=time.monotonic)
    done: list[dict[str, object]] = field(default_factory=list)

    def note(self, fault: str, seconds: float, **detail: object) -> None:
        """Record one fault that has just ended."""
        at = round(time.monotonic() - self.start - seconds, 1)
        self.done.append({"fault": fault, "at_s": at, "for_s": round(seconds, 1), **detail})


class RedisPair:
    """The worker's Redis (A), a replica of it (B), and a proxy the worker connects through."""

    def __init__(self, work: Path) -> None:
        self.ports = {"a": restartable_port(), "b": restartable_port()}
        self.servers: dict[str, ManagedProcess] = {}
        for name, port in self.ports.items():
            (work / name).mkdir(parents=True, exist_ok=True)
            self.servers[name] = ManagedProcess(
                f"redis-{name}", [redis_binary(), "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "yes", "--dir",
                                  str(work / name)], port, work / f"redis-{name}.log",
                redis_ready)
        self.proxy: TcpProxy | None = None

    @property
    def primary(self) -> ManagedProcess:
        """Server A, the one the worker's data lives on."""
        return self.servers["a"]

    def start(self) -> None:
        """Both servers up, B replicating A, the proxy in front of A."""
        for server in self.servers.values():
            server.start()
        self._client("b").replicaof("127.0.0.1", self.ports["a"])
        self.proxy = TcpProxy(("127.0.0.1", self.ports["a"]))

    @property
    def url(self) -> str:
        """What the worker connects to: the proxy."""
        assert self.proxy is not None
        return f"redis://127.0.0.1:{self.proxy.port}/0"

    @property
    def direct_url(self) -> str:
        """Server A itself, for the soak's own reads."""
        return f"redis://127.0.0.1:{self.ports['a']}/0"

    def _client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], socket_timeout=10)

    def slow(self, seconds: float, delay_s: float) -> None:
        """Every chunk through the proxy waits ``delay_s``, for ``seconds``."""
        assert self.proxy is not None
        self.proxy.delay_s = delay_s
        time.sleep(seconds)
        self.proxy.delay_s = 0.0

    def failover(self, seconds: float) -> None:
        """B promoted and A made its replica (A answers READONLY), then back."""
        a, b = self._client("a"), self._client("b")
        _wait(lambda: _in_sync(b), 30)
        b.replicaof("NO", "ONE")
        a.replicaof("127.0.0.1", self.ports["b"])
        time.sleep(seconds)
        _wait(lambda: _in_sync(a), 30)
        a.replicaof("NO", "ONE")
        b.replicaof("127.0.0.1", self.ports["a"])
        # A replica that finished a full sync rewrites its append-only file; until that
        # is done, a stop (SIGINT: "Writing initial AOF, can't exit", then SIGKILL after
        # the grace) would lose every write since the sync: Redis's data loss, not ours.
        _wait(lambda: _aof_settled(a), 60)

    def stop(self) -> None:
        """Proxy and servers down."""
        if self.proxy is not None:
            self.proxy.close()
        for server in self.servers.values():
            server.stop()


def limit_files(pid: int, seconds: float) -> None:
    """The process's file-size limit at one byte for ``seconds``.

    Its file writes fail as on a full disk; pipes and sockets are not files, so its output
    through a pipe and its network traffic go on.
    """
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
    try:
        time.sleep(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed meanwhile: its successor
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))  # never had it


def freeze(pid: int, seconds: float) -> None:
    """Stop a process (SIGSTOP) for ``seconds``, then let it go on (SIGCONT)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def _aof_settled(server: redis.Redis) -> bool:
    info = server.info("persistence")
    return bool(info.get("aof_rewrite_in_progress") == 0
                and info.get("aof_rewrite_scheduled") == 0 and info.get("loading") == 0)


def _in_sync(replica: redis.Redis) -> bool:
    info = replica.info("replication")
    return bool(info.get("master_link_status") == "up"
                and info.get("master_sync_in_progress") == 0)


def _wait(cond: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.1)
    raise RuntimeError("a Redis replica did not come in sync")
