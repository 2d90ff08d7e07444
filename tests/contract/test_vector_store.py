"""One contract suite, run on the in-memory store, real Redis and a real Redis Cluster."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from model_store.base import PinnedError, StaleParentError, VersionInfo
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


def test_a_delta_version_reads_unchanged_rows_from_its_parent(store):
    ids = ["x", "y", "z"]
    store.publish("d", "v1", ids, vecs(3, 2, 1.0), info("v1", 3, 2))
    # v2 changes y and adds w; x and z come from v1.
    store.publish("d", "v2", ["y", "w"], np.full((2, 2), 7.0, np.float32), info("v2", 4, 2),
                  parent="v1")
    version, got, found = store.lookup("d", ["x", "y", "z", "w", "nope"])
    assert version == "v2" and found.tolist() == [True, True, True, True, False]
    np.testing.assert_array_equal(got[:4], [vecs(3, 2, 1.0)[0], [7, 7], vecs(3, 2, 1.0)[2],
                                            [7, 7]])
    assert store.current("d").layers() == ["v2", "v1"]
    version, all_ids, mat = store.all_vectors("d")
    assert version == "v2" and sorted(all_ids) == ["w", "x", "y", "z"]
    np.testing.assert_array_equal(mat[all_ids.index("y")], [7, 7])
    # Rollback to the parent sees its own rows again.
    assert store.rollback("d") == "v1"
    np.testing.assert_array_equal(store.lookup("d", ["y"])[1][0], vecs(3, 2, 1.0)[1])


def test_retention_keeps_the_layers_retained_deltas_read(store):
    ids = [f"i{k}" for k in range(5)]
    store.publish("r", "v0", ids, vecs(5, 2, 0.0), info("v0", 5, 2))
    for k in range(1, 7):  # a chain of six deltas, each changing one row
        store.publish("r", f"v{k}", [f"i{k % 5}"], np.full((1, 2), 100.0 + k, np.float32),
                      info(f"v{k}", 5, 2), parent=f"v{k - 1}")
    assert store.versions("r") == ["v6", "v5", "v4"]
    version, got, found = store.lookup("r", ids)
    assert version == "v6" and found.all()
    np.testing.assert_array_equal(got[:, 0], [105.0, 106.0, 102.0, 103.0, 104.0])
    assert store.info("r", "v0").layers() == ["v0"]  # the base is still read by v4..v6
    # A full version retires the chain once no retained version reads it.
    for k in range(7, 10):
        store.publish("r", f"v{k}", ids, vecs(5, 2, float(k)), info(f"v{k}", 5, 2))
    assert store.versions("r") == ["v9", "v8", "v7"]
    if isinstance(store, MemoryVectorStore):
        assert store.info("r", "v0") is None and store.info("r", "v6") is None
    else:  # every retired layer's keys are gone
        keys = {k.decode() for k in store.client.scan_iter(match=store.base("r") + "*",
                                                           count=1000)}
        assert keys == {store.base("r") + suffix for suffix in (
            "current", "versions", "layers", "vec:v7", "vec:v8", "vec:v9",
            "meta:v7", "meta:v8", "meta:v9")}


def test_a_delta_over_a_version_that_is_not_current_is_refused(store):
    store.publish("s", "v1", ["x"], vecs(1, 2, 1.0), info("v1", 1, 2))
    store.publish("s", "v2", ["x"], vecs(1, 2, 2.0), info("v2", 1, 2))
    with pytest.raises(StaleParentError):
        store.publish("s", "v3", ["x"], vecs(1, 2, 3.0), info("v3", 1, 2), parent="v1")
    assert store.lookup("s", ["x"])[0] == "v2"
    assert store.versions("s") == ["v2", "v1"]
    store.publish("s", "v3", ["x"], vecs(1, 2, 3.0), info("v3", 1, 2), parent="v2")
    assert store.lookup("s", ["x"])[0] == "v3"


def test_a_retained_version_reads_back_whole_while_newer_ones_serve(store):
    """Off-policy evaluation scores an older version: every row as it was published."""
    store.publish("o", "v1", ["x", "y", "z"], vecs(3, 2, 1.0), info("v1", 3, 2))
    store.publish("o", "v2", ["y", "w"], np.full((2, 2), 7.0, np.float32), info("v2", 4, 2),
                  parent="v1")
    store.publish("o", "v3", ["x"], np.full((1, 2), 9.0, np.float32), info("v3", 4, 2),
                  parent="v2")
    ids, mat = store.version_vectors("o", "v2")
    rows = dict(zip(ids, mat.tolist(), strict=True))
    assert rows == {"x": [1.0, 1.0], "y": [7.0, 7.0], "z": [3.0, 3.0], "w": [7.0, 7.0]}
    ids, mat = store.version_vectors("o", "v1")
    assert sorted(ids) == ["x", "y", "z"] and mat.shape == (3, 2)
    assert store.lookup("o", ["x"])[0] == "v3"  # reading an old version moves nothing
    with pytest.raises(LookupError, match="not retained"):
        store.version_vectors("o", "v0")
