"""Prometheus metrics of ``freshrec serve``: latency, errors, and the version each arm serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

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


class CacheCounts(Protocol):
    """What the cache counts (a :class:`worker.serving.cache.CachedVectors`)."""

    ids_hit: int
    ids_read: int


class _CacheCollector(Collector):
    """Reads the cache's own counters at scrape time (no call on the request path)."""

    def __init__(self, cache: CacheCounts) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("freshrec_serve_cache_ids", "Item ids asked for, by "
                                     "whether the vector cache answered them (hit) or they "
                                     "were read from Redis (read)", labels=["result"])
        family.add_metric(["hit"], self.cache.ids_hit)
        family.add_metric(["read"], self.cache.ids_read)
        yield family


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

    def watch_cache(self, cache: CacheCounts) -> None:
        """Export ``freshrec_serve_cache_ids_total{result}`` from ``cache``'s counters."""
        self.registry.register(_CacheCollector(cache))

    def observe(self, route: str, code: int, seconds: float) -> None:
        """Record one answered request."""
        self.seconds.labels(route).observe(seconds)
        self.responses.labels(route, str(code)).inc()

    def served(self, arm: str, version: str | None) -> None:
        """Record the version an answer for ``arm`` came from (versions are ``<arm>-<seq>``)."""
        seq = version.rsplit("-", 1)[-1] if version else ""
        if seq.isdigit():
            self.version.labels(arm).set(int(seq))
