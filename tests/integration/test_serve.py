"""``freshrec serve`` on real Redis: one round trip, no mixed versions, outages, fuzzing."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings

from model_store.base import VersionInfo
from model_store.counters import RedisCounters
from model_store.redis_store import RedisVectorStore
from tests.helpers import wait_for
from tests.integration.test_outages import start_redis
from worker.config import ServeSettings, load_settings
from worker.serving.cache import CachedVectors
from worker.serving.http import create_app
from worker.serving.service import RankService
from worker.tools.embedded import ManagedProcess, free_port, restartable_port

pytestmark = pytest.mark.integration

IDS = [f"item-{i:04d}" for i in range(600)]
DIM = 8  # published width: 7 factors + bias


def version_vectors(n: int) -> np.ndarray:
    """Version n: every factor n, bias 0, so any mix of versions shows in the numbers."""
    vecs = np.full((len(IDS), DIM), float(n), np.float32)
    vecs[:, -1] = 0.0
    return vecs


def publish(store: RedisVectorStore, arm: str, n: int) -> str:
    version = f"{arm}-{n:08d}"
    store.publish(arm, version, IDS, version_vectors(n),
                  VersionInfo(version, DIM, len(IDS), "t", model_version=version,
                              user_prior=np.zeros(DIM - 1, "<f4").tobytes()))
    return version


class Counting(redis.Connection):
    """A real connection that counts what it sends: one send = one round trip."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


def test_a_lookup_is_one_round_trip_until_the_version_moves(stack, uid):
    pool = redis.ConnectionPool.from_url(stack.redis_url, connection_class=Counting)
    store = RedisVectorStore(redis.Redis(connection_pool=pool), prefix=uid)
    publish(store, "fresh", 1)
    store.lookup("fresh", IDS[:100])  # first sight of the version: + its metadata
    Counting.sends = 0
    for _ in range(10):
        version, vecs, found = store.lookup("fresh", IDS[:100])
    assert Counting.sends == 10 and version == "fresh-00000001" and found.all()
    publish(store, "fresh", 2)
    Counting.sends = 0
    version, vecs, _ = store.lookup("fresh", IDS[:100])
    assert version == "fresh-00000002" and (vecs[:, 0] == 2).all()
    assert Counting.sends == 3  # pointer moved: read again, + the new version's metadata
    store.rollback("fresh")
    assert store.lookup("fresh", IDS[:3])[0] == "fresh-00000001"  # the very next lookup
    pool.disconnect()


def test_served_vectors_cost_no_round_trip_until_the_pointer_is_due(stack, uid):
    pool = redis.ConnectionPool.from_url(stack.redis_url, connection_class=Counting)
    store = RedisVectorStore(redis.Redis(connection_pool=pool), prefix=uid)
    now = [0.0]
    cached = CachedVectors(store, max_age_s=0.1, clock=lambda: now[0])
    publish(store, "fresh", 1)
    cached.lookup("fresh", IDS[:100] + ["unknown"])
    Counting.sends = 0
    for _ in range(10):
        version, vecs, found = cached.lookup("fresh", IDS[:50] + ["unknown"])
    assert Counting.sends == 0 and version == "fresh-00000001"
    assert found[:50].all() and not found[50] and (vecs[:50, 0] == 1).all()
    publish(store, "fresh", 2)
    assert cached.lookup("fresh", IDS[:3])[0] == "fresh-00000001"  # within the max age
    now[0] = 0.2
    Counting.sends = 0
    version, vecs, _ = cached.lookup("fresh", IDS[:100])
    assert version == "fresh-00000002" and (vecs[:, 0] == 2).all()
    assert Counting.sends == 3  # due: pointer and ids read again, + the version's metadata
    store.rollback("fresh")
    now[0] = 0.4
    assert cached.lookup("fresh", IDS[:100])[0] == "fresh-00000001"
    pool.disconnect()


def get_json(url: str, body: dict | None = None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError):
        return None, {}, None


def start_serve(redis_url: str, prefix: str, tmp_path):
    port = free_port()
    proc = ManagedProcess("serve", [
        sys.executable, "-m", "worker.tools.cli", "serve", "--redis-url", redis_url,
        "--set", f"redis.prefix={prefix}", "--port", str(port),
        "--set", "serve.redis_timeout_s=0.5"], port, tmp_path / f"serve-{port}.log")
    base = f"http://127.0.0.1:{port}"
    # Ready = the service answers /readyz with 200 (it pinged Redis), not "port open"; the
    # child dies with this process, so a killed test run leaves no service behind.
    proc.start(90, lambda: get_json(base + "/readyz")[0] == 200)
    return proc, base, None


def stop(proc, log) -> None:
    proc.stop()


def test_clients_never_see_a_mixed_version_during_24_publishes_and_a_rollback(
        stack, uid, tmp_path):
    store = RedisVectorStore(redis.Redis.from_url(stack.redis_url), prefix=uid)
    publish(store, "fresh", 1)
    proc, base, log = start_serve(stack.redis_url, uid, tmp_path)
    done = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        while not done.is_set():
            ids = [IDS[i] for i in rng.choice(len(IDS), 100, replace=False)]
            query = "&".join(f"ids={i}" for i in ids)
            code, headers, body = get_json(f"{base}/v1/arms/fresh/vectors?{query}")
            if code != 200:
                problems.append(f"lookup {code}")
                continue
            n = int(body["version"].rsplit("-", 1)[1])
            values = {v for vec in body["vectors"].values() for v in vec[:-1]}
            if values != {float(n)} or headers.get("x-freshrec-version") != body["version"]:
                problems.append(f"mixed lookup: {body['version']} {sorted(values)[:5]}")
            seen.append(n)
            code, _, body = get_json(f"{base}/v1/rank", {
                "user_id": f"u{k}", "recent_items": ids[:5], "candidates": ids[5:65],
                "k": 10, "arm": "fresh"})
            if code != 200:
                problems.append(f"rank {code}")
                continue
            n = int(body["model_version"].rsplit("-", 1)[1])
            # history and candidates from version n: every score is (DIM - 1) * n * n
            if any(it["score"] != pytest.approx((DIM - 1) * n * n) for it in body["items"]):
                problems.append(f"mixed rank: {body['model_version']}")

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(2, 26):  # 24 publishes
            publish(store, "fresh", n)
            if n == 14:
                assert store.rollback("fresh") == "fresh-00000013"
                # Seen once the service's pointer read is older than its max age (0.1 s).
                wait_for(lambda: get_json(f"{base}/v1/rank", {
                    "user_id": "u", "candidates": IDS[:5], "arm": "fresh"})[1].get(
                        "x-freshrec-version") == "fresh-00000013", 10)
                store.unpin("fresh")
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        done.set()
        for t in threads:
            t.join(30)
        stop(proc, log)
    assert problems == []
    assert len(seen) > 20 and max(seen) == 25


def test_redis_outage_answers_503_and_the_service_recovers_by_itself(uid, tmp_path):
    port = restartable_port()  # Redis comes back on it
    server = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    store = RedisVectorStore(redis.Redis.from_url(url), prefix=uid)
    publish(store, "fresh", 1)
    proc, base, log = start_serve(url, uid, tmp_path)
    rank = {"user_id": "u", "candidates": IDS[:20], "arm": "fresh"}
    try:
        assert get_json(base + "/v1/rank", rank)[0] == 200
        server.stop()
        time.sleep(0.3)  # past the cache's max age: the next rank must read Redis
        start = time.monotonic()
        code, headers, body = get_json(base + "/v1/rank", rank)
        assert (code, headers.get("retry-after")) == (503, "1"), body
        assert "unavailable" in body["detail"]
        assert time.monotonic() - start < 5
        assert get_json(base + "/readyz")[0] == 503
        assert get_json(base + "/healthz")[0] == 200  # an outage is not a reason to restart
        server.start()
        wait_for(lambda: get_json(base + "/v1/rank", rank)[0] == 200, 30)
        assert get_json(base + "/readyz")[0] == 200
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:  # noqa: S310
            text = resp.read().decode()
        assert 'freshrec_serve_responses_total{code="503",route="/v1/rank"}' in text
    finally:
        stop(proc, log)
        server.stop()


def test_api_fuzzed_from_its_openapi_schema_never_answers_5xx(stack, uid):
    """Every operation of /openapi.json, driven by schemathesis with valid and invalid data."""
    client = redis.Redis.from_url(stack.redis_url)
    store = RedisVectorStore(client, prefix=uid)
    for arm in ("control", "fresh"):
        publish(store, arm, 1)
    arms = load_settings(None, {"experiment": {"arms": [
        {"name": "control", "lineage": "frozen", "share": 0.5, "policy": "epsilon"},
        {"name": "fresh", "share": 0.5, "policy": "thompson"}]}}).experiment.arms
    service = RankService(store, arms, stats=RedisCounters(client, uid))
    app = create_app(service, ServeSettings(max_ids=50, max_candidates=50, max_recent=20),
                     lambda: bool(client.ping()))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/arms/{arm}/vectors", "/v1/rank"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case) -> None:
            case.call_and_validate()

        check()
    client.close()
