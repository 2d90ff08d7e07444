"""A Redis failover under a running worker: its server becomes a replica, then master again.

Two real ``redis-server`` processes, A (the worker's) and B, B replicating A. Mid-stream the
roles swap (B promoted, A demoted to B's replica): every write the worker sends to A is
answered ``READONLY``. The worker must treat that as an outage — keep running, say so in
``/readyz``, keep its counter deltas in flight — and once A is master again, end with every
counter exact.
"""

from __future__ import annotations

import pytest
import redis

from model_store.counters import RedisCounters
from model_store.redis_store import connect
from tests.helpers import wait_for
from tests.integration.live_worker import LiveWorker, arm_counts
from tests.integration.test_outages import start_redis, status
from tests.integration.test_worker_e2e import overrides
from worker.tools.embedded import free_port
from worker.tools.synthetic import traffic

pytestmark = pytest.mark.integration


def in_sync(replica: redis.Redis) -> bool:
    info = replica.info("replication")
    return info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == 0


@pytest.mark.timeout(300)
def test_readonly_during_a_failover_is_an_outage_and_counters_end_exact(
        stack, uid, tmp_path, tiny_bert_dir):
    ports = {"a": free_port(), "b": free_port()}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    servers = {name: start_redis(port, tmp_path / name) for name, port in ports.items()}
    a, b = (redis.Redis(port=ports[n]) for n in ("a", "b"))
    b.replicaof("127.0.0.1", ports["a"])
    wait_for(lambda: in_sync(b), 30, what="B to replicate A")
    cfg = overrides(stack, uid, tmp_path, tiny_bert_dir)
    cfg["redis"].update(url=f"redis://127.0.0.1:{ports['a']}/0", timeout_s=2.0)
    worker = LiveWorker(cfg)
    base, loop, send = worker.base, worker.loop, worker.send
    events = list(traffic(500, seed=12, arms=("control", "fresh")))
    want = arm_counts(events)
    counters = RedisCounters(connect(f"redis://127.0.0.1:{ports['a']}/0"), uid)

    def exact() -> bool:
        got = counters.arm_totals()
        return all(got.get(arm, {}).get(t, 0) == n for (arm, t), n in want.items())

    try:
        send(events[:250])
        wait_for(lambda: status(base + "/readyz") == 200 and bool(counters.arm_totals()), 90,
                 what="a ready worker counting on A")
        wait_for(lambda: in_sync(b), 30, what="B in sync before the failover")
        b.replicaof("NO", "ONE")  # the failover: B promoted, A its replica
        a.replicaof("127.0.0.1", ports["b"])
        send(events[250:])
        wait_for(lambda: status(base + "/readyz") == 503, 60,
                 what="readyz to report Redis while A answers READONLY")
        assert loop.is_alive() and status(base + "/healthz") == 200
        with pytest.raises(redis.exceptions.ReadOnlyError):
            a.set(f"{uid}-probe", 1)
        a.replicaof("NO", "ONE")  # A master again (fail back); B follows it
        b.replicaof("127.0.0.1", ports["a"])
        wait_for(exact, 120, what="arm counters exact once A takes writes again")
        wait_for(lambda: status(base + "/readyz") == 200, 60, what="ready again")
        assert loop.is_alive()
    finally:
        worker.close()
        for server in servers.values():
            server.stop()
    assert not loop.is_alive()
