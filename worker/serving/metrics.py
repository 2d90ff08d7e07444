"""Prometheus metrics of ``freshrec serve``: latency, errors, and the version each arm serves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ROUTES", "VECTORS_ROUTE", "ServeMetrics", "route_of"]

#: Route templates used as the ``route`` label (bounded: a path never becomes a label).
VECTORS_ROUTE = "/v1/arms/{arm}/vectors"
ROUTES = (VECTORS_ROUTE, "/v1/rank", "/healthz", "/readyz", "/metrics", "other")

# Sub-millisecond resolution where the targets are (lookup p99 2 ms, rank p99 5 ms).
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def route_of(path: str) -> str:
    """The route template of a request path (``other`` for anything unrouted)."""
    if path.startswith("/v1/arms/") and path.endswith("/vectors"):
        return ROUTES[0]
    return path if path in ROUTES[1:5] else "other"


class ServeMetrics:
    """One registry per service instance (tests run several in one process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.seconds = Histogram("freshrec_serve_request_seconds", "Time from request to "
                                 "response, by route", ["route"], buckets=_BUCKETS, registry=r)
        self.responses = Counter("freshrec_serve_responses", "Responses by route and HTTP "
                                 "status code", ["route", "code"], registry=r)
        self.version = Gauge("freshrec_serve_version", "Sequence number of the version the "
                             "last answer of the arm came from", ["arm"], registry=r)
        self.redis_up = Gauge("freshrec_serve_redis_up", "1 when the last Redis call "
                              "succeeded, 0 after a failed one", registry=r)
        for route in ROUTES:
            self.seconds.labels(route)
            self.responses.labels(route, "200")

    def observe(self, route: str, code: int, seconds: float) -> None:
        """Record one answered request."""
        self.seconds.labels(route).observe(seconds)
        self.responses.labels(route, str(code)).inc()

    def served(self, arm: str, version: str | None) -> None:
        """Record the version an answer for ``arm`` came from (versions are ``<arm>-<seq>``)."""
        seq = version.rsplit("-", 1)[-1] if version else ""
        if seq.isdigit():
            self.version.labels(arm).set(int(seq))
