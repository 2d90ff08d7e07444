"""Shared counters: same contract on memory and real Redis, applied exactly once per token."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.counters import MemoryCounters, RedisCounters


@pytest.fixture(params=["memory", "redis", "cluster"])
def counters(request, uid):
    if request.param == "memory":
        return MemoryCounters()
    client = request.getfixturevalue("redis_client" if request.param == "redis"
                                     else "cluster_client")
    return RedisCounters(client, prefix=f"c_{uid}")


def test_apply_once_per_token(counters):
    items = {("i1", "impression"): 3, ("i1", "click"): 1, ("i2", "impression"): 2}
    arms = {("fresh", "impression"): 5, ("fresh", "click"): 1, ("control", "request"): 4}
    assert counters.apply("w:0", items, arms) is True
    assert counters.apply("w:0", items, arms) is False  # a crash-replay of the same flush
    assert counters.apply("w:1", {("i1", "impression"): 1}, {}) is True
    imps, clicks = counters.item_stats(["i1", "i2", "nope"])
    np.testing.assert_array_equal(imps, [4, 2, 0])
    np.testing.assert_array_equal(clicks, [1, 0, 0])
    totals = counters.arm_totals()
    assert totals["fresh"] == {"impression": 5, "click": 1}
    assert totals["control"] == {"request": 4}
