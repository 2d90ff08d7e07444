"""Roles: ingest processes (events -> samples topic) and a trainer (samples -> vectors)."""

from __future__ import annotations

import time

import pytest

from consumers.kafka_source import KafkaEventProducer, ensure_topics
from model_store.redis_store import RedisVectorStore
from tests.helpers import expected_samples, run_members, sample_key
from tests.integration.test_worker_e2e import (
    committed_total,
    overrides,
    simulate,
    simulate_split,
)
from worker.config import load_settings
from worker.learning.encoder import TextEncoder
from worker.runtime.app import build_app, build_ingest_app
from worker.tools.synthetic import encode, traffic

pytestmark = pytest.mark.integration


def role_settings(stack, uid, tmp_path, tiny_bert_dir, role: str):
    ov = overrides(stack, uid, tmp_path / role, tiny_bert_dir)
    ov["kafka"].update(group_id=f"{uid}-{role}", samples_topic=f"{uid}.samples",
                       create_topics=False)
    return ov


def setup_topics(settings, uid) -> None:
    ensure_topics(settings.kafka.client_options(), {f"{uid}.events": 2, f"{uid}.items": 1,
                                                    f"{uid}.dlq": 1, f"{uid}.samples": 2})


def event_ends(settings, uid) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    from consumers.log_end import exact_ends

    reader = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    try:
        parts = [TopicPartition(f"{uid}.events", p) for p in range(2)]
        return {(tp.topic, tp.partition): off for tp, off in exact_ends(reader, parts).items()}
    finally:
        reader.close()


def trained_keys(train_app) -> list:
    buffers = train_app.pipeline.buffers
    return sorted(map(sample_key, list(buffers.recent.items)))


def drain_and_train(ingest, train, ends, want, deadline, also=()) -> None:
    """Ingest to the log ends, close what is still open (the end of a finite stream),
    then run the trainer until every expected sample is in its buffers."""
    while time.monotonic() < deadline and not all(
            max(a.pipeline.offsets.get(tp, 0) for a in ingest) >= end
            for tp, end in ends.items()):
        for a in (*ingest, *also):
            a.worker.run_once()
    for a in ingest:
        a.pipeline.flush_joins()
        a.worker.checkpoint()
    while time.monotonic() < deadline and trained_keys(train) != want:
        train.worker.run_once()


@pytest.mark.timeout(480)  # a slow group settle, then the stream
def test_two_ingest_processes_and_a_trainer_label_every_impression_once(
        stack, uid, tmp_path, tiny_bert_dir):
    settings = {r: load_settings(None, role_settings(stack, uid, tmp_path, tiny_bert_dir, r))
                for r in ("ingest", "train")}
    setup_topics(settings["ingest"], uid)
    ingest = [build_ingest_app(settings["ingest"]) for _ in range(2)]
    train = build_app(settings["train"], encoder=TextEncoder(tiny_bert_dir), role="train")
    apps = [*ingest, train]
    try:
        # Both ingest members hold their partitions before the first event (a scale-up
        # mid-stream is the next test); each member polls on its own thread meanwhile.
        run_members([a.worker.run_once for a in apps],
                    lambda: all(a.pipeline.source._consumer.assignment() for a in ingest),
                    timeout_s=150, what="both ingest members to hold a partition")
        events = simulate(settings["ingest"].kafka.client_options(),
                          (f"{uid}.events", f"{uid}.items"), 500)
        want = sorted(map(sample_key, expected_samples(events, window_ms=5000)))
        ends = event_ends(settings["ingest"], uid)
        deadline = time.monotonic() + 120
        drain_and_train(ingest, train, ends, want, deadline, also=(train,))
        got = trained_keys(train)
        assert got == want, f"{len(got)} samples trained, {len(want)} expected"
        assert sum(a.samples.produced for a in ingest) >= len(want)
        fresh = train.trainer.lineages["fresh"]
        while time.monotonic() < deadline and (fresh.published is None
                                               or train.worker.cycle_running):
            train.worker.run_once()  # a cycle over the last samples may still be running
        assert fresh.published is not None
        store = RedisVectorStore(train.store.client, uid)
        assert store.current("fresh").version == train.trainer.lineages["fresh"].published
    finally:
        for a in apps:
            a.close()


def produce(settings, uid, events) -> None:
    producer = KafkaEventProducer(settings.kafka.client_options())
    for e in events:
        producer.emit(f"{uid}.events", e["user_id"].encode(), encode(e))
    producer.close()


@pytest.mark.timeout(480)  # a slow group settle, then the stream
def test_scale_from_one_to_two_ingest_processes_mid_stream_loses_no_label(
        stack, uid, tmp_path, tiny_bert_dir):
    """One ingest process reads the first part of a stream; a second joins the group; the
    rest follows. The clicks of the first part's last requests come after the scale-up, so
    the partition that moves must take those pending impressions along (hand-over through
    Redis): the trainer still gets every label of a reference join, each once."""
    settings = {r: load_settings(None, role_settings(stack, uid, tmp_path, tiny_bert_dir, r))
                for r in ("ingest", "train")}
    setup_topics(settings["ingest"], uid)
    events = list(traffic(600, seed=9, users=40, items=60))
    cut = next(k for k, e in enumerate(events) if e["request_id"] == "r300")
    held = [e for e in events[:cut] if e["type"] == "click"
            and int(e["request_id"][1:]) >= 270]  # clicked after the scale-up
    first_part = [e for e in events[:cut] if e not in held]
    want = sorted(map(sample_key, expected_samples(events, window_ms=5000)))
    produce(settings["ingest"], uid, first_part)
    ends = event_ends(settings["ingest"], uid)
    first = build_ingest_app(settings["ingest"])
    train = build_app(settings["train"], encoder=TextEncoder(tiny_bert_dir), role="train")
    apps = [first, train]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                first.pipeline.offsets.get(tp, 0) >= end for tp, end in ends.items()):
            first.worker.run_once()
        assert first.pipeline.joiner.pending > 0  # impressions waiting for their clicks
        second = build_ingest_app(settings["ingest"])  # the scale-up
        apps.append(second)
        members = (first, second)
        run_members([a.worker.run_once for a in members],  # the group may take a while
                    lambda: all(len(a.pipeline.source._consumer.assignment()) == 1
                                for a in members),
                    timeout_s=150, what="each ingest member to hold one partition")
        deadline = time.monotonic() + 120
        produce(settings["ingest"], uid, held + events[cut:])
        drain_and_train(members, train, event_ends(settings["ingest"], uid), want, deadline)
        moved = {(name, event): a.metrics.registry.get_sample_value(
            "freshrec_join_handover_total", {"event": event})
            for name, a in (("first", first), ("second", second))
            for event in ("released", "adopted", "stale")}
    finally:
        for a in apps:
            a.close()
    assert moved[("first", "released")] > 0 and moved[("second", "adopted")] > 0, moved
    assert moved[("first", "stale")] == moved[("second", "stale")] == 0
    got = trained_keys(train)
    assert got == want, f"{len(got)} samples trained, {len(want)} expected"


def test_kill_9_of_an_ingest_process_loses_and_doubles_no_sample(
        stack, uid, tmp_path, tiny_bert_dir):
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import wait_for

    ov = role_settings(stack, uid, tmp_path, tiny_bert_dir, "ingest")
    ov["ingest"]["checkpoint_interval_s"] = 1.0
    settings = load_settings(None, ov)
    setup_topics(settings, uid)
    events, send_rest = simulate_split(settings.kafka.client_options(),
                                       (f"{uid}.events", f"{uid}.items"), 1500, 800)
    want = sorted(map(sample_key, expected_samples(events, window_ms=5000)))
    sets = [f"--set={sec}.{k}={json.dumps(v)}" for sec, d in ov.items() for k, v in d.items()]
    proc = subprocess.Popen([sys.executable, "-m", "worker.tools.cli", "run", "--role",
                             "ingest", *sets], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ckpt = tmp_path / "ingest" / "ckpt"
        wait_for(lambda: len(list(ckpt.glob("ckpt-*"))) >= 2, timeout_s=90,
                 what="the ingest process to write two checkpoints")
        assert proc.poll() is None
        send_rest()  # more work arrives; the kill lands before it can all be committed
        proc.send_signal(signal.SIGKILL)  # mid-run: samples produced since its checkpoint
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # The kill left work behind: the group had not committed every event sent.
    assert committed_total(stack.bootstrap, settings.kafka.group_id, f"{uid}.events",
                           2) < len(events)
    ingest = build_ingest_app(settings)  # the restart
    train = build_app(load_settings(None, role_settings(stack, uid, tmp_path, tiny_bert_dir,
                                                        "train")),
                      encoder=TextEncoder(tiny_bert_dir), role="train")
    duplicates = 0
    try:
        assert ingest.worker.restore()
        ends = event_ends(settings, uid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
                ingest.pipeline.offsets.get(tp, 0) >= end for tp, end in ends.items()):
            ingest.worker.run_once()
        ingest.pipeline.flush_joins()
        ingest.worker.checkpoint()
        while time.monotonic() < deadline and trained_keys(train) != want:
            duplicates += train.worker.run_once().duplicates
    finally:
        ingest.close()
        train.close()
    assert trained_keys(train) == want  # every impression once: none lost, none twice


def test_samples_produced_again_after_a_crash_are_dropped_by_key(
        stack, uid, tmp_path, tiny_bert_dir):
    ov = role_settings(stack, uid, tmp_path, tiny_bert_dir, "ingest")
    ov["ingest"]["checkpoint_interval_s"] = 3600.0  # the crash comes before any checkpoint
    settings = load_settings(None, ov)
    setup_topics(settings, uid)
    events = simulate(settings.kafka.client_options(), (f"{uid}.events", f"{uid}.items"), 400)
    want = sorted(map(sample_key, expected_samples(events, window_ms=5000)))
    ends = event_ends(settings, uid)

    def ingest_all(app) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
                app.pipeline.offsets.get(tp, 0) >= end for tp, end in ends.items()):
            app.worker.run_once()
        app.pipeline.flush_joins()
        app.samples.send(app.pipeline.take_fresh())
        app.samples.flush()

    first = build_ingest_app(settings)
    ingest_all(first)  # every sample produced, no offset committed:
    first.pipeline.source.revoke_hook = None  # the crash: no checkpoint or commit on the
    first.close()  # way out (as under kill -9)
    produced_before = first.samples.produced
    second = build_ingest_app(settings)
    train = build_app(load_settings(None, role_settings(stack, uid, tmp_path, tiny_bert_dir,
                                                        "train")),
                      encoder=TextEncoder(tiny_bert_dir), role="train")
    duplicates = 0
    try:
        assert not second.worker.restore()  # nothing was checkpointed
        ingest_all(second)  # the same events again, the same samples
        second.worker.checkpoint()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and duplicates < produced_before:
            duplicates += train.worker.run_once().duplicates
    finally:
        second.close()
        train.close()
    assert produced_before == len(want) and duplicates == len(want)
    assert trained_keys(train) == want  # each once
