import pytest

from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.pipeline import IngestPipeline
from tests.fakes import ListSource
from tests.helpers import encode, event, expected_samples, malformed, sample_key, traffic


def build(messages):
    src, dlq = ListSource(messages), MemoryDeadLetters()
    return IngestPipeline(src, dlq), src, dlq


def test_good_events_around_bad_ones_all_become_samples():
    good = list(traffic(50, seed=2))
    bad = malformed()
    msgs, k = [], 0
    for i, obj in enumerate(good):
        msgs.append(RawMessage("freshrec.events", 0, k, None, encode(obj)))
        k += 1
        if i % 10 == 0 and bad:
            msgs.append(RawMessage("freshrec.events", 0, k, None, bad.pop()[0]))
            k += 1
    msgs.append(RawMessage("elsewhere", 0, 0, None, b"{}"))
    pipe, src, dlq = build(msgs)
    while src.pos < len(msgs):
        pipe.step(max_records=7)
    pipe.flush_joins()
    assert sorted(map(sample_key, pipe.buffers.recent.items)) == sorted(
        map(sample_key, expected_samples(good)))
    reasons = sorted(r.reason.value for _, r in dlq.records)
    assert reasons == sorted([r for _, r in malformed()] + ["unknown_topic"])
    pipe.checkpoint()
    assert src.committed[("freshrec.events", 0)] == k


def test_redelivered_events_are_dropped_by_id():
    objs = [event("impression", eid="a", ts=1), event("click", eid="b", ts=2)]
    msgs = [RawMessage("freshrec.events", 0, i, None, encode(o)) for i, o in enumerate(objs * 2)]
    pipe, src, _ = build(msgs)
    report = pipe.step(max_records=100)
    assert report.duplicates == 2 and report.samples == 1 and report.positives == 1


def test_item_updates_feed_the_catalog():
    msgs = [RawMessage("freshrec.items", 0, 0, None,
                       encode({"item_id": "i1", "ts": 1, "text": "blue jacket"})),
            RawMessage("freshrec.items", 0, 1, None,
                       encode({"item_id": "i1", "ts": 0, "text": "older text"}))]
    pipe, _, _ = build(msgs)
    pipe.step()
    assert pipe.catalog.texts == {"i1": "blue jacket"}
    assert pipe.catalog.take_changed() == ["i1"] and pipe.catalog.take_changed() == []


def test_failed_persist_leaves_offsets_uncommitted():
    msgs = [RawMessage("freshrec.events", 0, 0, None, encode(event("impression", eid="a", ts=1)))]
    pipe, src, _ = build(msgs)
    pipe.step()

    def boom(_offsets):
        raise OSError("disk full")

    pipe.set_persist(boom)
    with pytest.raises(OSError, match="disk full"):
        pipe.checkpoint()
    assert src.committed == {}


def test_configured_empty_state_is_kept_not_replaced_by_defaults():
    from consumers.dedupe import Deduper
    from consumers.dlq import MemoryDeadLetters
    from consumers.replay import ReplayBuffers
    from tests.fakes import ListSource

    buffers, deduper = ReplayBuffers(recent_capacity=7, reservoir_capacity=3), Deduper(11)
    pipeline = IngestPipeline(ListSource([]), MemoryDeadLetters(), buffers=buffers,
                              deduper=deduper)
    assert pipeline.buffers is buffers and pipeline.buffers.recent.capacity == 7
    assert pipeline.deduper is deduper


def test_caps_hold_under_a_stream_of_all_distinct_ids_and_evictions_are_counted():
    from collections import Counter

    from consumers.dedupe import Deduper
    from consumers.joiner import Joiner

    msgs = []
    for k in range(3000):  # every event a new user, item, request and id: adversarial
        for etype, dt in (("impression", 0), ("click", 1)):
            msgs.append(RawMessage("freshrec.events", 0, len(msgs), None, encode(event(
                etype, eid=f"{etype}-{k}", ts=1000 + 10 * k + dt, user=f"u{k}", item=f"i{k}",
                req=f"r{k}"))))
    src, dlq = ListSource(msgs), MemoryDeadLetters()
    pipe = IngestPipeline(src, dlq, joiner=Joiner(window_ms=5, max_users=200, closed_memory=300),
                          deduper=Deduper(max_ids=500, window_ms=10**9))
    evicted: Counter[str] = Counter()
    while src.pos < len(msgs):
        evicted += pipe.step(max_records=250).evicted
        assert len(pipe.deduper) <= 500
        assert len(pipe.joiner._history) <= 200 and len(pipe.joiner._closed) <= 300
    assert evicted["dedupe_ids"] == 6000 - len(pipe.deduper)
    assert evicted["user_histories"] >= 3000 - 200 and evicted["closed_keys"] > 2000
    assert len(pipe.buffers.recent.items) == 3000  # every impression still labelled
