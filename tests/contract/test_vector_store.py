"""One contract suite, run on the in-memory store, real Redis and a real Redis Cluster."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from model_store.base import PinnedError, VersionInfo
from model_store.memory_store import MemoryVectorStore
from model_store.redis_store import RedisVectorStore


@pytest.fixture(params=["memory", "redis", "cluster"])
def store(request, uid):
    if request.param == "memory":
        return MemoryVectorStore(retention=3)
    client = request.getfixturevalue("redis_client" if request.param == "redis"
                                     else "cluster_client")
    return RedisVectorStore(client, prefix=f"t_{uid}", retention=3)


def info(version: str, n: int, dim: int) -> VersionInfo:
    return VersionInfo(version=version, dim=dim, item_count=n, created_at="2026-01-01T00:00:00Z",
                       model_version="m1", user_prior=np.ones(dim, "<f4").tobytes())


def vecs(n: int, dim: int, fill: float) -> np.ndarray:
    return np.full((n, dim), fill, np.float32) + np.arange(n, dtype=np.float32)[:, None]


def test_publish_then_lookup_returns_exact_vectors(store):
    ids = [f"i{k}" for k in range(10)]
    store.publish("fresh", "v1", ids, vecs(10, 4, 0.5), info("v1", 10, 4))
    version, got, found = store.lookup("fresh", ["i3", "nope", "i0"])
    assert version == "v1"
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(got[0], vecs(10, 4, 0.5)[3])
    assert np.isnan(got[1]).all()
    cur = store.current("fresh")
    assert cur.dim == 4 and cur.item_count == 10 and cur.user_prior == np.ones(4, "<f4").tobytes()


def test_lookup_before_any_publish_is_empty(store):
    version, got, found = store.lookup("none", ["a"])
    assert version is None and not found.any()
    assert store.current("none") is None


def test_large_lookup_spans_chunks(store):
    ids = [f"i{k}" for k in range(9000)]
    store.publish("big", "v1", ids, vecs(9000, 3, 0.0), info("v1", 9000, 3))
    _, got, found = store.lookup("big", ids)
    assert found.all() and got[8999, 0] == 8999.0


def test_retention_keeps_newest_versions(store):
    for k in range(5):
        store.publish("a", f"v{k}", ["x"], vecs(1, 2, k), info(f"v{k}", 1, 2))
    assert store.versions("a") == ["v4", "v3", "v2"]


def test_a_retained_version_name_is_never_overwritten(store):
    ids = ["x", "y"]
    store.publish("a", "v1", ids, vecs(2, 3, 1.0), info("v1", 2, 3))
    with pytest.raises(ValueError, match="exists"):
        store.publish("a", "v1", ids, vecs(2, 3, 9.0), info("v1", 2, 3))
    version, got, _ = store.lookup("a", ids)
    assert version == "v1"
    np.testing.assert_array_equal(got, vecs(2, 3, 1.0))  # readers never saw a rewrite


def test_rollback_restores_previous_version_exactly_and_pins(store):
    ids = ["x", "y"]
    store.publish("a", "v1", ids, vecs(2, 3, 1.0), info("v1", 2, 3))
    store.publish("a", "v2", ids, vecs(2, 3, 2.0), info("v2", 2, 3))
    assert store.rollback("a") == "v1"
    version, got, _ = store.lookup("a", ids)
    assert version == "v1"
    np.testing.assert_array_equal(got, vecs(2, 3, 1.0))
    with pytest.raises(PinnedError):
        store.publish("a", "v3", ids, vecs(2, 3, 3.0), info("v3", 2, 3))
    assert store.lookup("a", ids)[0] == "v1"
    store.unpin("a")
    store.publish("a", "v3", ids, vecs(2, 3, 3.0), info("v3", 2, 3))
    assert store.lookup("a", ids)[0] == "v3"


def test_rollback_without_older_version_fails_clearly(store):
    with pytest.raises(LookupError):
        store.rollback("a")
    store.publish("a", "v1", ["x"], vecs(1, 2, 1.0), info("v1", 1, 2))
    with pytest.raises(LookupError):
        store.rollback("a")


def test_reader_hammering_during_publishes_never_sees_a_mix(store):
    # Every vector of version k is filled with k (no per-row offset): a mix shows as 2 values.
    ids = [f"i{k}" for k in range(3000)]
    store.publish("h", "v0", ids, np.zeros((3000, 4), np.float32), info("v0", 3000, 4))
    stop, bad, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            version, got, found = store.lookup("h", ids)
            values = set(np.unique(got).tolist())
            if not found.all() or len(values) != 1 or values != {float(version[1:])}:
                bad.append((version, sorted(values)[:3]))
            reads[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for k in range(1, 25):
            store.publish("h", f"v{k}", ids, np.full((3000, 4), k, np.float32),
                          info(f"v{k}", 3000, 4))
            time.sleep(0.01)  # let the reader interleave
    finally:
        stop.set()
        t.join(30)
    assert reads[0] > 5
    assert bad == []


def test_all_vectors_returns_every_item(store):
    store.publish("a", "v1", ["x", "y"], vecs(2, 2, 1.0), info("v1", 2, 2))
    version, ids, mat = store.all_vectors("a")
    assert version == "v1" and sorted(ids) == ["x", "y"]
    assert mat.shape == (2, 2)
