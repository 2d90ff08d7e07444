"""freshrec on a real 3-master Redis Cluster: one slot per arm, serving and counters unchanged."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_store.counters import RedisCounters
from model_store.redis_store import RedisVectorStore
from tests.integration.test_serve import IDS, publish
from worker.config import ServeSettings, load_settings
from worker.serving.http import create_app
from worker.serving.service import RankService

pytestmark = pytest.mark.integration


def test_each_arms_keys_share_one_slot_and_arms_spread_over_the_masters(cluster_client, uid):
    store = RedisVectorStore(cluster_client, prefix=uid)
    nodes = set()
    for n, arm in enumerate(f"arm{k}" for k in range(12)):
        publish(store, arm, n + 1)
        base = store.base(arm)
        keys = [base + s for s in ("current", "versions")] + [
            f"{base}vec:{arm}-{n + 1:08d}", f"{base}meta:{arm}-{n + 1:08d}"]
        slots = {cluster_client.keyslot(k) for k in keys}
        assert len(slots) == 1, (arm, slots)
        nodes.add(cluster_client.get_node_from_key(keys[0]).name)
    assert len(nodes) == 3  # 12 arms' hash tags land on every master


def test_serving_reads_a_cluster_like_a_single_redis(cluster_client, uid):
    store = RedisVectorStore(cluster_client, prefix=uid)
    for arm in ("control", "fresh"):
        publish(store, arm, 1)
    publish(store, "fresh", 2)
    store.rollback("fresh")
    arms = load_settings().experiment.arms
    service = RankService(store, arms, stats=RedisCounters(cluster_client, uid))
    client = TestClient(create_app(service, ServeSettings()))
    got = client.get("/v1/arms/fresh/vectors", params=[("ids", IDS[0]), ("ids", "nope")])
    assert got.status_code == 200 and got.headers["x-freshrec-version"] == "fresh-00000001"
    assert got.json()["vectors"]["nope"] is None
    ranked = client.post("/v1/rank", json={"user_id": "u", "recent_items": IDS[:3],
                                           "candidates": IDS[3:40], "k": 5})
    assert ranked.status_code == 200 and len(ranked.json()["items"]) == 5
    counters = RedisCounters(cluster_client, uid)
    assert counters.apply("t:0", {(IDS[3], "impression"): 2}, {("fresh", "impression"): 2})
    imps, _ = counters.item_stats([IDS[3]])
    assert np.array_equal(imps, [2])


def test_the_whole_worker_runs_on_a_cluster(stack, redis_cluster, uid, tmp_path,
                                            tiny_bert_dir):
    """Ingest, train, publish (full and delta versions), counters: all on a cluster."""
    from model_store.redis_store import connect
    from tests.integration.test_worker_e2e import overrides, simulate
    from worker.learning.encoder import TextEncoder
    from worker.runtime.app import build_app

    ov = overrides(stack, uid, tmp_path, tiny_bert_dir)
    ov["redis"] = {"url": redis_cluster.url, "cluster": True, "prefix": uid}
    ov["training"].update(warmup_cycles=1, dense_every_cycles=3)
    settings = load_settings(None, ov)
    app = build_app(settings, encoder=TextEncoder(tiny_bert_dir))
    layers = set()
    try:
        simulate(settings.kafka.client_options(), (f"{uid}.events", f"{uid}.items"), 600)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and max(layers, default=1) < 2:
            app.worker.run_once()
            for report in app.worker.last_reports.values():
                layers.add(report.published_layers)
        app.worker.checkpoint()  # flushes the arm counters
    finally:
        app.close()
    assert max(layers) >= 2, "no delta version was published on the cluster"
    client = connect(redis_cluster.url, cluster=True)
    store = RedisVectorStore(client, prefix=uid)
    lin = app.trainer.lineages["fresh"]
    assert store.current("fresh").version == lin.published
    version, ids, mat = store.all_vectors("fresh")
    want = lin.served.export_rows(np.array(app.trainer.table.lookup(ids)),
                                  app.trainer.table.semantic)
    np.testing.assert_allclose(mat, want, rtol=1e-6, atol=1e-6)
    _, got, found = store.lookup("fresh", ids[:50])
    assert found.all() and np.allclose(got, mat[:50])
    totals = RedisCounters(client, uid).arm_totals()
    sent = app.worker.monitor.totals
    assert totals["fresh"]["impression"] == sent["fresh"]["impression"] > 0
