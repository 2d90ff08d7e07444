"""Redis slow rather than down, and connections reset, through a fault-injecting TCP proxy.

A real worker on the real broker talks to the real Redis through ``TcpProxy``: first slow
(every chunk delayed, still inside the command timeout), then slower than the timeout,
then with every connection reset mid-stream. It must keep running throughout, report a
command past its timeout as Redis unavailable, and end with counters exact.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from model_store.counters import RedisCounters
from model_store.redis_store import connect
from tests.helpers import wait_for
from tests.integration.live_worker import LiveWorker, arm_counts
from tests.integration.test_outages import metrics_text, status
from tests.integration.test_worker_e2e import overrides
from worker.tools.synthetic import traffic
from worker.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def readyz(base: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:  # noqa: S310
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))


@pytest.mark.timeout(300)
def test_slow_and_resetting_redis_keeps_the_worker_up_and_counters_exact(
        stack, uid, tmp_path, tiny_bert_dir):
    host, port = stack.redis_url.split("//")[1].split("/")[0].split(":")
    proxy = TcpProxy((host, int(port)))
    cfg = overrides(stack, uid, tmp_path, tiny_bert_dir)
    cfg["redis"].update(url=f"redis://127.0.0.1:{proxy.port}/0", timeout_s=1.0)
    worker = LiveWorker(cfg)
    base, loop, send = worker.base, worker.loop, worker.send
    events = list(traffic(600, seed=6, arms=("control", "fresh")))
    want = arm_counts(events)
    counters = RedisCounters(connect(stack.redis_url), uid)  # read past the proxy

    def counted() -> int:
        return sum(sum(by_type.values()) for by_type in counters.arm_totals().values())

    try:
        proxy.delay_s = 0.05  # slow: each round trip ~0.1 s, inside the 1 s timeout
        send(events[:200])
        wait_for(lambda: counted() >= 100, 90, what="counting through a slow Redis")
        assert status(base + "/readyz") == 200 and loop.is_alive()
        proxy.delay_s = 2.0  # slower than the timeout: an outage as far as the worker knows
        send(events[200:400])
        wait_for(lambda: status(base + "/readyz") == 503, 60, what="readyz to report Redis")
        detail = readyz(base)["dependencies"]["redis"]["detail"]  # type: ignore[index]
        # Whichever call timed out first says so: a publish, the counters or the loop.
        assert detail in ("publish failed", "counters not flushed") or "Redis unavailable" in \
            str(detail), detail
        assert loop.is_alive() and status(base + "/healthz") == 200
        proxy.delay_s = 0.0
        wait_for(lambda: status(base + "/readyz") == 200, 90, what="ready once Redis is quick")
        send(events[400:500])
        assert proxy.cut() > 0  # every connection reset mid-stream
        send(events[500:])

        def exact() -> bool:
            got = counters.arm_totals()
            return all(got.get(a, {}).get(t, 0) == n for (a, t), n in want.items())

        wait_for(exact, 120, what="arm counters to match what was sent")
        wait_for(lambda: 'freshrec_up{dependency="redis"} 1.0' in metrics_text(base), 60,
                 what="the redis up gauge back to 1")
        assert loop.is_alive()
    finally:
        worker.close()
        proxy.close()
    assert not loop.is_alive()
    assert exact()  # and not counted twice on the way out
