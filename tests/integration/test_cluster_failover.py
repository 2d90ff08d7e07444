"""A Redis Cluster master lost and its replica promoted, under a running worker.

Redis replicates asynchronously: a master that acknowledged a counter update and died
before its replica had it takes the update along when the replica is promoted. The worker
therefore waits (``redis.wait_replicas``) until a replica holds each update, version and
flip. To make the loss certain rather than a race, the replica is frozen (SIGSTOP) before
the master is killed, and its link to the master is cut: the master acknowledges updates
the replica never sees. With the wait,
those updates were never counted as done, so they are re-sent under their token to the
promoted replica and the counters end exact. Until the old master rejoins as the new one's
replica, the shard has no replica to wait for and the worker reports Redis unavailable.
"""

from __future__ import annotations

import signal

import pytest
import redis

from model_store.counters import RedisCounters
from model_store.redis_store import connect
from tests.helpers import wait_for
from tests.integration.live_worker import LiveWorker, arm_counts
from tests.integration.test_outages import status
from tests.integration.test_slow_redis import readyz
from tests.integration.test_worker_e2e import overrides
from worker.tools.cluster import EmbeddedCluster
from worker.tools.synthetic import traffic

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_a_master_lost_with_a_lagging_replica_loses_no_counter_update(
        stack, uid, tmp_path, tiny_bert_dir):
    with EmbeddedCluster(3, tmp_path / "cluster", replicas=1) as cluster:
        cfg = overrides(stack, uid, tmp_path, tiny_bert_dir)
        cfg["redis"].update(url=cluster.url, cluster=True, timeout_s=2.0, wait_replicas=1,
                            wait_replicas_s=1.0)
        master, replica = cluster.master_of(f"{uid}:{{{uid}:stats}}:arm")
        assert replica is not None and master.proc is not None and replica.proc is not None
        worker = LiveWorker(cfg)
        base, loop = worker.base, worker.loop
        events = list(traffic(600, seed=12, arms=("control", "fresh")))
        want = arm_counts(events)
        counters = RedisCounters(connect(f"redis://127.0.0.1:{replica.port}/0", cluster=True),
                                 uid)

        def counted() -> int:
            return sum(sum(by_type.values()) for by_type in counters.arm_totals().values())

        def exact() -> bool:
            got = counters.arm_totals()
            return all(got.get(a, {}).get(t, 0) == n for (a, t), n in want.items())

        try:
            worker.send(events[:200])
            wait_for(lambda: counted() >= 100, 90, what="counting on the cluster")
            replica.proc.send_signal(signal.SIGSTOP)  # the replica falls behind...
            redis.Redis(port=master.port).client_kill_filter(_type="replica")  # ...for good
            worker.send(events[200:400])
            wait_for(lambda: status(base + "/readyz") == 503, 60,
                     what="readyz to report the missing replica")
            detail = str(readyz(base)["dependencies"])
            assert "replicas acknowledged" in detail or "not flushed" in detail, detail
            master.proc.kill()  # lost, with updates only it had acknowledged
            master.proc.wait(10)
            replica.proc.send_signal(signal.SIGCONT)
            cluster.wait_ok(90, master=replica)  # the replica is promoted
            master.start()  # the old master rejoins, as the new master's replica
            cluster.wait_ok(90)
            worker.send(events[400:])
            wait_for(exact, 150, what="arm counters to match what was sent")
            wait_for(lambda: status(base + "/readyz") == 200, 90, what="ready again")
            assert loop.is_alive()
        finally:
            if replica.proc is not None and replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGCONT)
            worker.close()
        assert not loop.is_alive()
        assert exact()  # and not counted twice on the way out
