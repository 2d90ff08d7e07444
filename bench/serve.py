"""``freshrec serve`` over HTTP on loopback, beside a raw Redis read of the same ids.

    python -m bench.serve [--items 100000] [--requests 3000] [--clients 4]

One run, one Redis, one catalog (``--items`` vectors of 65 floats per arm):

* ``raw HMGET``: redis-py reading the 100 ids' vectors straight from the current version's
  hash (no version pointer, no decoding): the floor an app could reach by itself.
* ``lookup``: ``GET /v1/arms/fresh/vectors`` with the same 100 ids, through the service
  (version-consistent read, JSON encoding, HTTP).
* ``rank``: ``POST /v1/rank`` with 10 recent items and 500 candidates, k = 10, on an arm
  with the greedy policy and on one with Thompson (Monte-Carlo propensities).
* ``... no cache``: the same requests to a second service started with
  ``serve.version_max_age_s=0``, which reads the pointer and every id from Redis on every
  request (the service's vector cache off): the cost of a cold id or a due pointer.

Latency: one client, keep-alive, sequential requests (p50/p99). Throughput: ``--clients``
threads, each on its own keep-alive connection, for the same number of requests. Client
and server share this machine's cores, so throughput here is a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

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


def http_call(port: int, method: str, path: str, body: bytes | None
              ) -> Callable[[], object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"} if body else {}

    def call() -> object:
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
        return data
    return call


def raw_hmget(url: str, key: str, ids: list[str]) -> Callable[[], object]:
    client = redis.Redis.from_url(url)
    return lambda: client.hmget(key, ids)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    rport, sport = free_port(), free_port()
    server = ManagedProcess("redis", [redis_binary(), "--port", str(rport), "--bind",
                                      "127.0.0.1", "--save", "", "--dir", str(work)],
                            rport, work / "redis.log", redis_ready)
    server.start()
    url = f"redis://127.0.0.1:{rport}/0"
    client = redis.Redis.from_url(url)
    store = RedisVectorStore(client)
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
    serve = ManagedProcess("serve", [sys.executable, "-m", "worker.tools.cli", "serve",
                                     "--redis-url", url, "--port", str(sport),
                                     "--set", f"experiment.arms={arms}"],
                           sport, work / "serve.log")
    serve.start(90, ready(sport))
    nport = free_port()
    uncached = ManagedProcess("serve-nocache", [
        sys.executable, "-m", "worker.tools.cli", "serve", "--redis-url", url, "--port",
        str(nport), "--set", f"experiment.arms={arms}", "--set", "serve.version_max_age_s=0"],
        nport, work / "serve-nocache.log")
    uncached.start(90, ready(nport))
    try:
        pick = [ids[i] for i in rng.choice(len(ids), 610, replace=False)]
        lookup_ids = pick[:100]
        query = urllib.parse.urlencode([("ids", i) for i in lookup_ids])
        vec_key = store.base("fresh") + "vec:fresh-00000001"
        rank_body = {"user_id": "user-1", "recent_items": pick[100:110],
                     "candidates": pick[110:610], "k": 10}
        cases: dict[str, Callable[[], Callable[[], object]]] = {
            "raw HMGET (100 ids)": lambda: raw_hmget(url, vec_key, lookup_ids),
            "lookup (100 ids)": lambda: http_call(sport, "GET",
                                                  f"/v1/arms/fresh/vectors?{query}", None),
            "rank greedy (500 cand.)": lambda: http_call(
                sport, "POST", "/v1/rank", json.dumps({**rank_body, "arm": "fresh"}).encode()),
            "rank thompson (500 cand.)": lambda: http_call(
                sport, "POST", "/v1/rank",
                json.dumps({**rank_body, "arm": "control"}).encode()),
            "lookup (100 ids) no cache": lambda: http_call(
                nport, "GET", f"/v1/arms/fresh/vectors?{query}", None),
            "rank greedy (500) no cache": lambda: http_call(
                nport, "POST", "/v1/rank", json.dumps({**rank_body, "arm": "fresh"}).encode()),
        }
        results = {}
        for name, make in cases.items():
            lat = percentiles(timed(make(), args.requests))
            rps = throughput(make, args.clients, args.requests)
            results[name] = {**lat, "rps": round(rps)}
            print(f"{name:28s} p50 {lat['p50_ms']:7.3f} ms  p99 {lat['p99_ms']:7.3f} ms  "
                  f"{rps:8.0f} req/s ({args.clients} clients)", flush=True)
        raw = results["raw HMGET (100 ids)"]
        look = results["lookup (100 ids)"]
        print(json.dumps({
            "items": args.items, "requests": args.requests, "clients": args.clients,
            "results": results,
            "lookup_p99_over_raw_p99": round(look["p99_ms"] / raw["p99_ms"], 2),
            "targets": {"lookup_p99_le_2ms": look["p99_ms"] <= 2.0,
                        "rank_p99_le_5ms": results["rank greedy (500 cand.)"]["p99_ms"] <= 5.0},
        }, indent=2))
    finally:
        serve.stop()
        uncached.stop()
        server.stop()


if __name__ == "__main__":
    main()
