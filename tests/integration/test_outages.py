"""Outages against a real worker: Redis stopped and restarted; the worker stays up and exact."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from consumers.kafka_source import KafkaEventProducer
from model_store.counters import RedisCounters
from model_store.redis_store import connect
from tests.helpers import encode, wait_for
from tests.integration.test_worker_e2e import overrides
from worker.config import load_settings
from worker.runtime.app import build_app
from worker.tools.embedded import (
    ManagedProcess,
    free_port,
    redis_binary,
    redis_ready,
    restartable_port,
)
from worker.tools.synthetic import traffic

pytestmark = pytest.mark.integration


def start_redis(port, workdir):
    server = ManagedProcess("redis", [redis_binary(), "--port", str(port), "--bind",
                                      "127.0.0.1", "--save", "", "--appendonly", "yes",
                                      "--appendfsync", "always",
                                      "--dir", str(workdir)], port, workdir / "redis.log",
                            redis_ready)
    server.start()
    return server


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def metrics_text(base):
    with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:  # noqa: S310 - loopback
        return resp.read().decode()


def test_redis_outage_keeps_the_worker_up_and_counters_exact(stack, uid, tmp_path,
                                                              tiny_bert_dir):
    port = restartable_port()  # Redis comes back on it
    redis = start_redis(port, tmp_path)
    cfg = overrides(stack, uid, tmp_path, tiny_bert_dir)
    cfg["redis"] = {"url": f"redis://127.0.0.1:{port}/0", "prefix": uid}
    cfg["metrics"] = {"port": free_port()}
    cfg["ingest"]["checkpoint_interval_s"] = 0.5
    settings = load_settings(None, cfg)
    app = build_app(settings)
    http = app.metrics.serve("127.0.0.1", settings.metrics.port)
    base = f"http://127.0.0.1:{settings.metrics.port}"
    stop = threading.Event()
    loop = threading.Thread(target=app.worker.run, args=(stop,), daemon=True)
    loop.start()
    producer = KafkaEventProducer(settings.kafka.client_options())
    events = list(traffic(600, seed=4, arms=("control", "fresh")))

    def send(batch):
        for e in batch:
            producer.emit(settings.kafka.events_topic, e["user_id"].encode(), encode(e))
        producer.flush()

    try:
        send(events[:500])
        wait_for(lambda: status(base + "/readyz") == 200, 60, what="worker ready")
        redis.stop()  # the outage: events keep coming while Redis is gone
        send(events[500:])
        wait_for(lambda: status(base + "/readyz") == 503, 60, what="readyz to report Redis")
        assert loop.is_alive() and status(base + "/healthz") == 200
        assert 'freshrec_up{dependency="redis"} 0.0' in metrics_text(base)  # says so too
        redis = start_redis(port, tmp_path)  # the same server back, with its data
        want = {}
        for e in events:
            key = (e["arm"], e["type"])
            want[key] = want.get(key, 0) + 1
        counters = RedisCounters(connect(f"redis://127.0.0.1:{port}/0"), uid)

        def exact():
            got = counters.arm_totals()
            return all(got.get(a, {}).get(t, 0) == n for (a, t), n in want.items())

        wait_for(exact, 90, what="arm counters in Redis to match what was sent")
        wait_for(lambda: status(base + "/readyz") == 200, 60, what="ready again")
        assert loop.is_alive()
        wait_for(lambda: 'freshrec_up{dependency="redis"} 1.0' in metrics_text(base), 60,
                 what="the redis up gauge back to 1")
    finally:
        stop.set()
        loop.join(60)
        http.close()
        app.close()
        producer.close()
        redis.stop()
    assert not loop.is_alive()
