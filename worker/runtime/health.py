"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, for Prometheus and orchestrators.

``/healthz`` answers 200 while the main loop keeps turning (a wedged loop is what a restart
fixes); ``/readyz`` answers 200 while every dependency (Kafka, Redis) answered its last
call, so a load balancer or a rollout waits for a worker that can do its job. Outages are
not liveness failures: the worker retries by itself, and restarting it would not help.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["Health", "HealthServer"]


class Health:
    """Liveness and readiness as the loop reports them (thread-safe, cheap to update)."""

    def __init__(self, stale_after_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._beat = clock()
        self._deps: dict[str, tuple[bool, str]] = {}
        self._lock = threading.Lock()

    def beat(self) -> None:
        """The loop completed an iteration."""
        self._beat = self.clock()

    def set(self, dependency: str, up: bool, detail: str = "") -> None:
        """Record whether ``dependency`` answered its last call."""
        with self._lock:
            self._deps[dependency] = (up, detail)

    def live(self) -> tuple[bool, dict[str, Any]]:
        """(alive, detail): the loop turned within ``stale_after_s``."""
        age = self.clock() - self._beat
        return age < self.stale_after_s, {"loop_age_s": round(age, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready, detail): alive and every dependency up."""
        alive, detail = self.live()
        with self._lock:
            deps = {k: {"up": up, "detail": d} for k, (up, d) in self._deps.items()}
        return alive and all(v["up"] for v in deps.values()), {**detail, "dependencies": deps}


class HealthServer:
    """A threaded HTTP server for the three endpoints; ``close()`` stops it."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        handler = _handler(registry, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="freshrec-http")
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()

    # prometheus_client's server had these names; keep callers that stop it working.
    def shutdown(self) -> None:
        """Stop serving (see :meth:`close`)."""
        self._server.shutdown()

    def server_close(self) -> None:
        """Release the port."""
        self._server.server_close()


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = health.live() if path == "/healthz" else health.ready()
                body = json.dumps({"ok": ok, **detail}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: scrapes every few seconds would flood the log."""

    return Handler
