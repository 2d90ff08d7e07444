"""The whole worker against the real broker and Redis: publish, lookup CLI, kill -9 and resume."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import msgspec
import pytest

from consumers.kafka_source import KafkaEventProducer
from model_store.redis_store import RedisVectorStore
from tests.helpers import expected_samples, sample_key, wait_for
from tests.integration.ingest_helpers import drain
from worker.config import ArmSettings, load_settings
from worker.learning.encoder import TextEncoder
from worker.runtime.app import build_app
from worker.tools.cli import main as cli_main
from worker.tools.simulate import SimConfig, Simulator

pytestmark = pytest.mark.integration

ARMS = [ArmSettings(name="control", lineage="frozen", share=0.5),
        ArmSettings(name="fresh", lineage="incremental", share=0.5)]


def overrides(stack, uid, tmp_path, tiny_bert_dir):
    return {
        "kafka": {"bootstrap_servers": stack.bootstrap, "group_id": uid,
                  "events_topic": f"{uid}.events", "items_topic": f"{uid}.items",
                  "dlq_topic": f"{uid}.dlq", "partitions": 2, "poll_max_records": 300},
        "redis": {"url": stack.redis_url, "prefix": uid},
        # A checkpoint every 0.5 s: the kill below lands between checkpoints of a chain.
        "ingest": {"join_window_s": 5.0, "recent_capacity": 200_000,
                   "checkpoint_interval_s": 0.5},
        "model": {"encoder_path": tiny_bert_dir, "dim": 16},
        "training": {"cycle_interval_s": 0.5, "steps_per_cycle": 3, "batch_size": 128},
        "store": {"checkpoint_dir": str(tmp_path / "ckpt")},
        "metrics": {"port": 0},
    }


def simulate(opts, topics, requests, seed=5):
    events, _ = simulate_split(opts, topics, requests, 0, seed)
    return events


def simulate_split(opts, topics, requests, hold_back, seed=5):
    """Produce the simulator's traffic but its last ``hold_back`` events; (all events, a
    callable that produces the held-back ones)."""
    producer = KafkaEventProducer(opts)
    out: list[tuple[str, bytes, bytes]] = []
    clock = itertools.count(time.time_ns() // 1_000_000 - 3_600_000, 40)

    def emit(topic, key, value):
        out.append((topic, key, value))

    sim = Simulator(SimConfig(seed=seed, n_users=200, initial_items=80), ARMS, None, emit,
                    topics, clock_ms=lambda: next(clock))
    sim.publish_catalog()
    for _ in sim.run(requests):
        pass
    held = [k for k, (topic, _, _) in enumerate(out) if topic == topics[0]][-hold_back:] \
        if hold_back else []
    cut = held[0] if held else len(out)
    for topic, key, value in out[:cut]:
        producer.emit(topic, key, value)
    producer.flush()

    def send_rest():
        for topic, key, value in out[cut:]:
            producer.emit(topic, key, value)
        producer.flush()
        producer.close()

    if not held:
        producer.close()
    return [msgspec.json.decode(v) for t, _, v in out if t == topics[0]], send_rest


def committed_total(bootstrap, group, topic, partitions):
    """Offsets the group has committed on ``topic``, summed (0 where none)."""
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group,
                          enable_auto_commit=False)
    try:
        return sum(probe.committed(TopicPartition(topic, p)) or 0 for p in range(partitions))
    finally:
        probe.close()


def test_events_in_vectors_out_and_lookup_cli(stack, uid, tmp_path, tiny_bert_dir, capsys):
    settings = load_settings(None, overrides(stack, uid, tmp_path, tiny_bert_dir))
    app = build_app(settings, encoder=TextEncoder(tiny_bert_dir))
    try:
        simulate(settings.kafka.client_options(), (f"{uid}.events", f"{uid}.items"), 400)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and app.trainer.lineages["fresh"].seq < 2:
            app.worker.run_once()
        app.worker.checkpoint()  # flushes the arm and item counters to Redis
        assert app.trainer.lineages["fresh"].seq >= 2, "two versions not published within 60 s"
    finally:
        app.close()
    store = RedisVectorStore(app.store.client, uid)
    assert store.current("fresh").version == app.trainer.lineages["fresh"].published
    assert cli_main(["lookup", "--redis-url", stack.redis_url, "--set", f"redis.prefix={uid}",
                     "--arm", "fresh", "item-000001", "no-such-item"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == app.trainer.lineages["fresh"].published
    assert len(out["vectors"]["item-000001"]) == 17 and out["vectors"]["no-such-item"] is None
    assert cli_main(["rollback", "--redis-url", stack.redis_url, "--set", f"redis.prefix={uid}",
                     "--arm", "fresh"]) == 0
    rolled = json.loads(capsys.readouterr().out)
    assert store.current("fresh").version == rolled["current"] != out["version"]
    # the worker's version gauge follows the rollback (it reads the store on its stats clock)
    app.metrics.record_served_versions(app.trainer.served_versions())
    served = app.metrics.registry.get_sample_value("freshrec_published_version",
                                                   {"arm": "fresh"})
    assert served == int(rolled["current"].rsplit("-", 1)[1])
    assert cli_main(["status", "--redis-url", stack.redis_url, "--set", f"redis.prefix={uid}"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["arms"]["fresh"]["pinned"] == rolled["current"]
    stats = status["statistics"]["arms"]
    # every impression the simulator sent was counted once, across the arms, in Redis
    sent = app.worker.monitor.totals
    assert stats["fresh"]["impressions"] == sent["fresh"]["impression"] > 0
    assert stats["control"]["clicks"] == sent["control"]["click"]
    assert "p_value" in stats["fresh"] and 0 <= status["statistics"]["srm_p_value"] <= 1
    assert stats["fresh"]["diff_low"] <= stats["fresh"]["diff"] <= stats["fresh"]["diff_high"]


def test_kill_worker_mid_run_restart_resumes_without_losing_events(
        stack, uid, tmp_path, tiny_bert_dir):
    ov = overrides(stack, uid, tmp_path, tiny_bert_dir)
    settings = load_settings(None, ov)
    topics = (f"{uid}.events", f"{uid}.items")
    from consumers.kafka_source import ensure_topics

    ensure_topics(settings.kafka.client_options(), {topics[0]: 2, topics[1]: 1})
    events, send_rest = simulate_split(settings.kafka.client_options(), topics, 1500, 800)
    sets = [f"--set={sec}.{k}={json.dumps(v)}" for sec, d in ov.items() for k, v in d.items()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "worker.tools.cli", "run", *sets], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ckpt = tmp_path / "ckpt"
        wait_for(lambda: len(list(ckpt.glob("ckpt-*"))) >= 2, timeout_s=90,
                 what="the worker to write two checkpoints")
        assert proc.poll() is None
        send_rest()  # more work arrives; the kill lands before it can all be committed
        proc.send_signal(signal.SIGKILL)  # no chance to checkpoint or commit
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # The kill left work behind: the group had not committed every event sent.
    assert committed_total(stack.bootstrap, settings.kafka.group_id, topics[0], 2) < len(events)
    app = build_app(settings, encoder=TextEncoder(tiny_bert_dir))
    try:
        assert app.worker.restore()
        from kafka import KafkaConsumer, TopicPartition

        from consumers.log_end import exact_ends

        probe = KafkaConsumer(bootstrap_servers=[stack.bootstrap])
        parts = [TopicPartition(topics[0], p) for p in range(2)]
        ends = {(tp.topic, tp.partition): off for tp, off in exact_ends(probe, parts).items()}
        probe.close()
        drain(app.worker, ends, timeout_s=90)
        app.pipeline.flush_joins()
        got = Counter(map(sample_key, app.pipeline.buffers.recent.items))
    finally:
        app.close()
    want = Counter(map(sample_key, expected_samples(events, window_ms=5000)))
    assert got == want
