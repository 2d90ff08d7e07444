"""``freshrec serve`` over HTTP on loopback, on realistic id traffic, beside raw Redis reads.

    python -m bench.serve [--items 100000] [--requests 3000] [--clients 4]

One Redis, one catalog (``--items`` vectors of 65 floats per arm). Every request asks for
ids drawn afresh: 100 distinct ids per lookup, 10 recent items and 500 distinct
candidates per rank, from one of two workloads:

* ``zipf``: item popularity Zipf(1.1) over the catalog (ranks shuffled over the ids), as
  real traffic is skewed; the targets are judged here;
* ``uniform``: every item equally likely, the worst case for the vector cache.

For each workload, in one run:

* ``raw HMGET``: redis-py reading the same ids straight from the current version's hash
  (no pointer, no decoding, no HTTP): the floor an app could reach by itself;
* ``lookup``: ``GET /v1/arms/fresh/vectors`` through a freshly started ``freshrec serve``
  (its vector cache on, the default), and through one started with ``serve.cache_rows=0``
  (the cache off: the pointer and every id read from Redis on every request);
* ``rank greedy`` / ``rank thompson``: ``POST /v1/rank``, k = 10, greedy on ``fresh``,
  Thompson (Monte-Carlo propensities) on ``control``.

The cached service's hit ratio (ids answered from memory over ids asked for, from its own
``freshrec_serve_cache_ids_total``) is printed for each case's latency phase. Latency: one
client, keep-alive, sequential requests after a warm-up of the same workload (p50/p99).
Throughput: ``--clients`` threads on their own connections, each with requests of its own.
No request is sent twice. Client, services and Redis share this machine's cores, so
throughput here is a floor.
"""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.results import emit, parser, target
from model_store.base import VersionInfo
from model_store.redis_store import RedisVectorStore
from worker.tools.embedded import ManagedProcess, free_port, redis_binary, redis_ready

DIM = 64


def ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False
    return check


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def timed(call: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(200, n)):
        call()  # warm-up: connections, caches, the first version's metadata
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def throughput(make: Callable[[], Callable[[], object]], clients: int, n: int) -> float:
    calls = [make() for _ in range(clients)]
    for c in calls:
        c()
    per = n // clients
    barrier = threading.Barrier(clients + 1)

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        for _ in range(per):
            call()

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return per * clients / (time.perf_counter() - start)


class Workload:
    """Per-request id draws from one popularity distribution over the catalog."""

    def __init__(self, ids: list[str], kind: str, seed: int) -> None:
        self.ids, self.rng = ids, np.random.default_rng(seed)
        n = len(ids)
        if kind == "zipf":
            weights = 1.0 / np.arange(1, n + 1) ** 1.1
            self.order = self.rng.permutation(n)  # popularity rank -> id, shuffled
        else:
            weights, self.order = np.ones(n), np.arange(n)
        self.cdf = np.cumsum(weights / weights.sum())

    def draw(self, k: int) -> list[str]:
        """``k`` distinct ids, each drawn by popularity."""
        got: dict[int, None] = {}
        while len(got) < k:
            ranks = np.searchsorted(self.cdf, self.rng.random(2 * k), side="right")
            for r in np.minimum(ranks, len(self.cdf) - 1):
                got.setdefault(int(self.order[r]))
                if len(got) == k:
                    break
        return [self.ids[i] for i in got]


def parts(requests: list[Any], n: int, clients: int) -> list[list[Any]]:
    """The latency phase's requests (warm-up + ``n``), then one fresh share per client.

    Every timed request, in either phase, is one the service has not been sent before,
    so the cache holds only what earlier requests of the workload put there.
    """
    warm = min(200, n)
    rest = requests[warm + n:]
    per = max(1, len(rest) // clients)
    return [requests[:warm + n], *(rest[k * per:(k + 1) * per] for k in range(clients))]


def cycling(port: int, method: str, requests: list[tuple[str, bytes | None]], n: int,
            clients: int) -> Callable[[], Callable[[], object]]:
    """A maker of calls; each made call sends its own share of ``requests`` (see parts)."""
    shares = iter(parts(requests, n, clients))

    def make() -> Callable[[], object]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"content-type": "application/json"} if method == "POST" else {}
        it = itertools.cycle(next(shares))

        def call() -> object:
            path, body = next(it)
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path[:60]}: {resp.status} {data[:200]!r}")
            return data
        return call
    return make


def raw_cycling(url: str, key: str, lookups: list[list[str]], n: int, clients: int
                ) -> Callable[[], Callable[[], object]]:
    """Raw ``HMGET`` of each lookup's ids in turn, shared out as :func:`cycling` does."""
    shares = iter(parts(lookups, n, clients))

    def make() -> Callable[[], object]:
        client, it = redis.Redis.from_url(url), itertools.cycle(next(shares))
        return lambda: client.hmget(key, next(it))
    return make


def cache_counts(port: int) -> tuple[float, float]:
    """(ids hit, ids read) from the service's own metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    got = {"hit": 0.0, "read": 0.0}
    for line in text.splitlines():
        if line.startswith("freshrec_serve_cache_ids_total{"):
            got[line.split('result="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return got["hit"], got["read"]


def start_serve(url: str, work: Path, name: str, arms: str, *extra: str) -> tuple[
        ManagedProcess, int]:
    """A ``freshrec serve`` on a free port, ready."""
    port = free_port()
    argv = [sys.executable, "-m", "worker.tools.cli", "serve", "--redis-url", url, "--port",
            str(port), "--set", f"experiment.arms={arms}"]
    for setting in extra:
        argv += ["--set", setting]
    proc = ManagedProcess(name, argv, port, work / f"{name}.log")
    proc.start(90, ready(port))
    return proc, port


def measure(name: str, make: Callable[[], Callable[[], object]], n: int, clients: int,
            cached_port: int | None = None) -> dict[str, float]:
    """Latency (one client), throughput (``clients``) and the cache's hit ratio; printed.

    The hit ratio (a cached service only) is over the latency phase's requests.
    """
    before = cache_counts(cached_port) if cached_port else (0.0, 0.0)
    lat: dict[str, float] = percentiles(timed(make(), n))
    if cached_port:
        hit, read = (a - b for a, b in zip(cache_counts(cached_port), before, strict=True))
        lat["cache_hit_ratio"] = round(hit / max(hit + read, 1.0), 4)
    rps = throughput(make, clients, n)
    hits = f"  cache hits {lat['cache_hit_ratio']:.3f}" if cached_port else ""
    print(f"  {name:30s} p50 {lat['p50_ms']:7.3f} ms  p99 {lat['p99_ms']:7.3f} ms  "
          f"{rps:8.0f} req/s ({clients} clients){hits}", flush=True)
    return {**lat, "rps": round(rps)}


def main() -> None:
    ap = parser("bench.serve", __doc__)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    if args.smoke:
        args.items, args.requests, args.clients = 3000, 60, 2
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    rport = free_port()
    server = ManagedProcess("redis", [redis_binary(), "--port", str(rport), "--bind",
                                      "127.0.0.1", "--save", "", "--dir", str(work)],
                            rport, work / "redis.log", redis_ready)
    server.start()
    url = f"redis://127.0.0.1:{rport}/0"
    store = RedisVectorStore(redis.Redis.from_url(url))
    ids = [f"item-{i:07d}" for i in range(args.items)]
    rng = np.random.default_rng(0)
    for arm in ("control", "fresh"):
        vecs = rng.normal(scale=0.1, size=(len(ids), DIM + 1)).astype(np.float32)
        version = f"{arm}-00000001"
        store.publish(arm, version, ids, vecs, VersionInfo(
            version, DIM + 1, len(ids), "bench", model_version=version,
            user_prior=np.zeros(DIM, "<f4").tobytes()))
    arms = json.dumps([{"name": "control", "lineage": "frozen", "share": 0.5,
                        "policy": "thompson"}, {"name": "fresh", "share": 0.5}])
    vec_key = store.base("fresh") + "vec:fresh-00000001"
    n = args.requests
    results: dict[str, dict[str, object]] = {}
    uncached, nport = start_serve(url, work, "serve-nocache", arms, "serve.cache_rows=0")
    try:
        for seed, kind in enumerate(("zipf", "uniform")):
            draw = Workload(ids, kind, seed + 1)
            # Warm-up and timed requests of the latency phase, then the throughput phase's:
            # all drawn from the same workload, none sent twice.
            total = 2 * n + min(200, n) + args.clients
            lookups = [draw.draw(100) for _ in range(total)]
            paths: list[tuple[str, bytes | None]] = [
                ("/v1/arms/fresh/vectors?" + urllib.parse.urlencode([("ids", i) for i in q]), None)
                for q in lookups]
            bodies: list[dict[str, object]] = []
            for _ in range(total):
                picked = draw.draw(510)
                bodies.append({"user_id": f"user-{len(bodies)}", "recent_items": picked[:10],
                               "candidates": picked[10:], "k": 10})

            def ranks(arm: str, bodies: list[dict[str, object]] = bodies
                      ) -> list[tuple[str, bytes | None]]:
                return [("/v1/rank", json.dumps({**b, "arm": arm}).encode()) for b in bodies]

            c = args.clients
            cached, sport = start_serve(url, work, f"serve-{kind}", arms)
            try:
                print(f"{kind} ({args.items:,} items):", flush=True)
                res: dict[str, object] = {
                    "raw HMGET (100 ids)": measure("raw HMGET (100 ids)",
                                                   raw_cycling(url, vec_key, lookups, n, c),
                                                   n, c)}
                res["lookup (100 ids)"] = measure("lookup (100 ids)", cycling(
                    sport, "GET", paths, n, c), n, c, sport)
                res["rank greedy (500)"] = measure("rank greedy (500)", cycling(
                    sport, "POST", ranks("fresh"), n, c), n, c, sport)
                res["rank thompson (500)"] = measure("rank thompson (500)", cycling(
                    sport, "POST", ranks("control"), n, c), n, c, sport)
                res["lookup (100 ids) no cache"] = measure(
                    "lookup (100 ids) no cache", cycling(nport, "GET", paths, n, c), n, c)
                res["rank greedy (500) no cache"] = measure(
                    "rank greedy (500) no cache", cycling(nport, "POST", ranks("fresh"), n, c),
                    n, c)
                results[kind] = res
            finally:
                cached.stop()
    finally:
        uncached.stop()
        server.stop()
    zipf = results["zipf"]
    look = zipf["lookup (100 ids)"]
    rank = zipf["rank greedy (500)"]
    raw = zipf["raw HMGET (100 ids)"]
    assert isinstance(look, dict) and isinstance(rank, dict) and isinstance(raw, dict)
    print(f"zipf: lookup p99 {look['p99_ms']:.2f} ms (target <= 2), rank p99 "
          f"{rank['p99_ms']:.2f} ms (target <= 5), lookup p99 / raw HMGET p99 "
          f"{look['p99_ms'] / raw['p99_ms']:.2f}")
    emit("bench.serve", args, {"workloads": results,
                               "zipf_lookup_p99_over_raw_p99":
                               round(look["p99_ms"] / raw["p99_ms"], 2)},
         {"zipf lookup p99": target(look["p99_ms"], "<=", 2.0, "ms"),
          "zipf rank p99": target(rank["p99_ms"], "<=", 5.0, "ms")})


if __name__ == "__main__":
    main()
