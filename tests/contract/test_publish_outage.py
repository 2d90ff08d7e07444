"""Redis lost in the middle of a publish, on real Redis and a real Redis Cluster.

Two ways a connection can drop around the flip: before the script runs (the version is
written, never current) and after it ran (current, but the publisher never heard). Either
way the arm keeps serving one whole version, and nothing written stays behind for good.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

from model_store.base import StaleParentError, StoreUnavailable
from model_store.redis_store import RedisVectorStore
from tests.contract.test_vector_store import info, vecs

IDS = [f"i{k}" for k in range(50)]


@pytest.fixture(params=["redis", "cluster"])
def client(request):
    return request.getfixturevalue("redis_client" if request.param == "redis"
                                   else "cluster_client")


def cut_at_flip(store: RedisVectorStore, after: bool) -> None:
    """The next flip's connection drops, before the script runs or after it ran."""
    real = store._flip

    def flip(*args, **kwargs):
        store._flip = real
        if after:
            real(*args, **kwargs)
        raise redis.ConnectionError("Connection reset by peer")

    store._flip = flip


def version_keys(client, store: RedisVectorStore, arm: str) -> set[str]:
    base = store.base(arm)
    names = [k.decode().removeprefix(base) for k in client.scan_iter(match=base + "*")]
    return {k for k in names if k.startswith(("vec:", "meta:"))}


def v2_cut_at_flip(client, uid, after: bool) -> RedisVectorStore:
    """A store whose arm holds v1, and whose publish of v2 lost Redis at its flip."""
    store = RedisVectorStore(client, prefix=f"t_{uid}", retention=3)
    store.publish("fresh", "v1", IDS, vecs(50, 4, 1.0), info("v1", 50, 4))
    cut_at_flip(store, after=after)
    with pytest.raises(StoreUnavailable):
        store.publish("fresh", "v2", IDS, vecs(50, 4, 2.0), info("v2", 50, 4))
    return store


def test_an_outage_before_the_flip_leaves_the_old_version_and_no_orphan(client, uid):
    store = v2_cut_at_flip(client, uid, after=False)
    version, got, found = store.lookup("fresh", IDS)
    assert version == "v1" and found.all()
    np.testing.assert_array_equal(got, vecs(50, 4, 1.0))
    store.publish("fresh", "v3", IDS, vecs(50, 4, 3.0), info("v3", 50, 4))  # Redis back
    assert store.current("fresh").version == "v3"
    assert version_keys(client, store, "fresh") == {"vec:v1", "meta:v1", "vec:v3", "meta:v3"}


def test_an_outage_after_the_flip_is_current_and_the_next_delta_is_refused(client, uid):
    store = v2_cut_at_flip(client, uid, after=True)
    assert store.current("fresh").version == "v2"  # it ran: readers see v2, whole
    _, got, _ = store.lookup("fresh", IDS)
    np.testing.assert_array_equal(got, vecs(50, 4, 2.0))
    # The publisher still believes v1 is current: its delta over v1 is refused, not applied
    # over v2, and a full version follows.
    with pytest.raises(StaleParentError):
        store.publish("fresh", "v3", IDS[:5], vecs(5, 4, 3.0), info("v3", 50, 4), parent="v1")
    store.publish("fresh", "v4", IDS, vecs(50, 4, 4.0), info("v4", 50, 4))
    assert store.current("fresh").version == "v4"
    assert "vec:v3" not in version_keys(client, store, "fresh")


def test_a_restarted_publisher_may_reuse_the_name_of_a_version_that_never_flipped(client, uid):
    # The publisher is killed (or loses Redis) after writing v2 and before its flip; restored
    # from a checkpoint taken before, it names its next version v2 again.
    store = v2_cut_at_flip(client, uid, after=False)
    store.publish("fresh", "v2", IDS, vecs(50, 4, 5.0), info("v2", 50, 4))
    _, got, _ = store.lookup("fresh", IDS)
    np.testing.assert_array_equal(got, vecs(50, 4, 5.0))  # the new v2, whole
    with pytest.raises(ValueError, match="names are not reused"):  # a flipped one: never
        store.publish("fresh", "v2", IDS, vecs(50, 4, 6.0), info("v2", 50, 4))
