"""Ingestion against the real embedded broker: DLQ, crash-restart, consumer groups."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from kafka import KafkaProducer

from tests.helpers import encode, expected_samples, malformed, sample_key, traffic, wait_for
from tests.integration.ingest_helpers import drain, make_topics, make_worker, produce, read_dlq

pytestmark = pytest.mark.integration


def keyed(objs):
    return [(o["user_id"].encode(), encode(o)) for o in objs]


def test_mixed_valid_and_malformed_all_accounted_for(kafka_options, uid, tmp_path):
    topics = make_topics(kafka_options, uid)
    good = list(traffic(300, seed=1))
    bad = malformed()
    values = keyed(good)
    for i, (value, _) in enumerate(bad):  # spread the bad ones between good ones
        values.insert(1 + i * 40, (b"u1", value))
    ends = produce(kafka_options, topics.events, values)
    worker = make_worker(kafka_options, topics, uid, tmp_path)
    try:
        drain(worker, ends)
        worker.pipeline.flush_joins()
        worker.checkpoint()
        got = sorted(map(sample_key, worker.pipeline.buffers.recent.items))
        assert got == sorted(map(sample_key, expected_samples(good)))
        dead = read_dlq(kafka_options, topics.dlq, len(bad))
        assert sorted(h["freshrec.reason"].decode() for _, h in dead) == sorted(r for _, r in bad)
        assert {v for v, _ in dead} == {v for v, _ in bad}  # raw bytes, unchanged
        assert all(h["freshrec.source.topic"].decode() == topics.events for _, h in dead)
        rejected = worker.metrics.registry.get_sample_value(
            "freshrec_events_rejected_total", {"reason": "bad_value"})
        assert rejected == 2
    finally:
        worker.pipeline.source.close()


@pytest.mark.parametrize("crash_point", ["before_persist", "after_persist_before_commit"])
def test_restart_after_crash_between_poll_and_commit_loses_and_duplicates_nothing(
        kafka_options, uid, tmp_path, crash_point):
    topics = make_topics(kafka_options, uid)
    good = list(traffic(400, seed=7))
    ends = produce(kafka_options, topics.events, keyed(good))

    first = make_worker(kafka_options, topics, uid, tmp_path, poll_max_records=40)
    # Process about half, checkpoint cleanly, then process more and crash.
    half = {tp: end // 2 for tp, end in ends.items()}
    drain(first, half)
    first.checkpoint()
    for _ in range(3):
        first.run_once()
    committed = dict(first.pipeline.committed)
    assert first.pipeline.offsets != committed  # there is uncommitted work to lose
    if crash_point == "after_persist_before_commit":
        def crash(_offsets):
            raise RuntimeError("killed before commit")
        first.pipeline.source.commit = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            first.checkpoint()
    first.pipeline.source.close()  # dies without committing what followed

    second = make_worker(kafka_options, topics, uid, tmp_path)
    try:
        assert second.restore()
        drain(second, ends)
        second.pipeline.flush_joins()
        got = Counter(map(sample_key, second.pipeline.buffers.recent.items))
        want = Counter(map(sample_key, expected_samples(good)))
        assert got == want
        assert max(got.values()) == 1
    finally:
        second.pipeline.source.close()


def test_two_consumers_in_one_group_split_partitions_and_see_every_event_once(
        kafka_options, uid, tmp_path):
    topics = make_topics(kafka_options, uid)
    workers = [make_worker(kafka_options, topics, uid, tmp_path / f"w{i}") for i in range(2)]
    stop = threading.Event()

    def loop(w):
        while not stop.is_set():
            w.run_once()

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(len([p for p in w.pipeline.source.assignment()
                                  if p[0] == topics.events]) == 2 for w in workers),
                 timeout_s=40, what="both members to hold two event partitions")
        good = list(traffic(300, seed=3))
        ends = produce(kafka_options, topics.events, keyed(good))

        def done():
            merged = {}
            for w in workers:
                merged.update({tp: o for tp, o in w.pipeline.offsets.items()})
            return all(merged.get(tp, 0) >= e for tp, e in ends.items())

        wait_for(done, timeout_s=40, what="all partitions consumed")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    parts = [{p for p in w.pipeline.offsets if p[0] == topics.events} for w in workers]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    ids = [set(w.pipeline.deduper.state_dict()["ids"]) for w in workers]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {o["event_id"] for o in good}
    samples = []
    for w in workers:
        w.pipeline.flush_joins()
        samples += map(sample_key, w.pipeline.buffers.recent.items)
        w.pipeline.source.close()
    assert Counter(samples) == Counter(map(sample_key, expected_samples(good)))


def test_oversized_and_hostile_messages_reach_the_dlq_once_across_a_crash(
        kafka_options, uid, tmp_path):
    topics = make_topics(kafka_options, uid, partitions=2)
    good = list(traffic(200, seed=11))
    hostile = [b"x" * (10 << 20),  # 10 MiB: the DLQ keeps a truncated copy
               encode(good[0]).replace(b'"imp-', b'"\xff\xfe-'),  # invalid UTF-8 in a string
               b"[" * 10_000 + b"]" * 10_000]  # nesting past the decoder's limit
    first_half, second_half = keyed(good[:200]), keyed(good[200:])
    first = make_worker(kafka_options, topics, uid, tmp_path, poll_max_records=50)
    first.restore()
    drain(first, produce(kafka_options, topics.events, first_half))
    first.checkpoint()
    # After the checkpoint: hostile messages between good ones, then a kill -9.
    ends = produce(kafka_options, topics.events,
                   [(b"u1", v) for v in hostile] + second_half)
    drain(first, ends)
    first.pipeline.dead_letters.flush()
    first.pipeline.source.revoke_hook = None  # a kill -9 runs no rebalance hook
    first.pipeline.source.close()

    second = make_worker(kafka_options, topics, uid, tmp_path)
    try:
        assert second.restore()
        drain(second, ends)
        second.checkpoint()
        dead = read_dlq(kafka_options, topics.dlq, len(hostile) + 1, timeout_s=8)
        sources = Counter((h["freshrec.source.partition"], h["freshrec.source.offset"])
                          for _, h in dead)
        assert len(dead) == len(hostile) and max(sources.values()) == 1
        reasons = sorted(h["freshrec.reason"].decode() for _, h in dead)
        assert reasons == ["not_json", "not_utf8", "too_large"]
        big = next(h for _, h in dead if h["freshrec.reason"] == b"too_large")
        assert big["freshrec.original_size"] == str(10 << 20).encode()
        assert second.pipeline.dead_letters.skipped_duplicates == len(hostile)
        second.pipeline.flush_joins()
        got = Counter(map(sample_key, second.pipeline.buffers.recent.items))
        assert got == Counter(map(sample_key, expected_samples(good)))
    finally:
        second.pipeline.source.close()


def test_dead_letters_a_checkpoint_holds_are_not_sent_again_when_its_commit_was_lost(
        kafka_options, uid, tmp_path):
    """A kill after a checkpoint is written and before its offsets are committed (an outage
    can hold a commit back for seconds): the restart reads again from the older commit, and
    the bad messages in between are in the restored state already, their dead letters too."""
    topics = make_topics(kafka_options, uid, partitions=2)
    good = list(traffic(160, seed=5))
    bad = [b"not json", b"{}", b'{"type": "impression"}']
    tail = good[120:]
    values = keyed(good[:60]) + [(b"u1", v) for v in bad] + keyed(good[60:120])
    first = make_worker(kafka_options, topics, uid, tmp_path, poll_max_records=30)
    first.restore()
    drain(first, produce(kafka_options, topics.events, keyed(good[:1])))
    first.checkpoint()  # an early commit: the restart reads again from here
    ends = produce(kafka_options, topics.events, values)
    drain(first, ends)

    def killed(_offsets):
        raise RuntimeError("killed after the checkpoint, before the commit")

    first.pipeline.source.commit = killed  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        first.checkpoint()
    first.pipeline.source.revoke_hook = None  # a kill -9 runs no rebalance hook
    first.pipeline.source.close()

    second = make_worker(kafka_options, topics, uid, tmp_path)
    try:
        assert second.restore()
        # More traffic behind the replayed part: draining to its end reads the replay first.
        drain(second, produce(kafka_options, topics.events, keyed(tail)))
        second.checkpoint()
        dead = read_dlq(kafka_options, topics.dlq, len(bad) + 1, timeout_s=8)
        sources = Counter((h["freshrec.source.partition"], h["freshrec.source.offset"])
                          for _, h in dead)
        assert len(dead) == len(bad) and max(sources.values()) == 1, sources
        second.pipeline.flush_joins()
        got = Counter(map(sample_key, second.pipeline.buffers.recent.items))
        assert got == Counter(map(sample_key, expected_samples(good)))
    finally:
        second.pipeline.source.close()


def test_consumer_lag_counts_messages_the_worker_has_not_fetched_yet(kafka_options, uid,
                                                                      tmp_path):
    topics = make_topics(kafka_options, uid, partitions=2)
    ends = produce(kafka_options, topics.events, keyed(list(traffic(50, seed=2))))
    worker = make_worker(kafka_options, topics, uid, tmp_path)
    try:
        drain(worker, ends)
        # The worker is busy elsewhere (training, checkpointing): no fetch sees these.
        # One record per batch: tansu answers ListOffsets with the last batch's base
        # offset + 1, which is the log end only when batches hold one record.
        producer = KafkaProducer(acks="all", linger_ms=0, **kafka_options)
        for key, value in keyed(list(traffic(40, seed=3))):
            producer.send(topics.events, key=key, value=value).get(timeout=30)
        producer.close()
        worker.refresh_statistics()
        lag = {labels: worker.metrics.registry.get_sample_value(
            "freshrec_consumer_lag", {"topic": topics.events, "partition": str(p)})
            for p, labels in enumerate(("p0", "p1"))}
        waiting = sum(1 for _ in traffic(40, seed=3))
        assert sum(v or 0 for v in lag.values()) == waiting
    finally:
        worker.pipeline.source.close()
