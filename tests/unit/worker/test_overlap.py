"""Ingestion goes on while a cycle trains; the commit order holds (in-memory source)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from consumers.columns import HOLDOUT_BUCKETS
from consumers.snapshot import FeedSnapshot
from model_store.checkpoints import CheckpointStore
from tests.helpers import wait_for
from tests.unit.worker.test_training import build, sim_messages
from worker.learning.batches import is_holdout
from worker.learning.encoder import TextEncoder
from worker.runtime.loop import Worker
from worker.runtime.metrics import Metrics


class GatedTrainer:
    """A real trainer whose cycles wait for ``gate``: the test decides when one ends."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.started = threading.Event()
        self.feeds: list[Any] = []

    def run_cycle(self, feed, now_s):
        self.feeds.append(feed)
        self.started.set()
        assert self.gate.wait(60)
        return self.inner.run_cycle(feed, now_s)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_ingestion_continues_during_a_cycle_and_the_next_checkpoint_commits_it(
        tiny_bert_dir, tmp_path):
    msgs = sim_messages(1200)
    source, pipeline, store, trainer = build(TextEncoder(tiny_bert_dir), msgs)
    source.messages = msgs  # served 200 at a time below
    gated = GatedTrainer(trainer)
    ckpts = CheckpointStore(tmp_path)
    worker = Worker(pipeline, ckpts, Metrics(), trainer=gated, checkpoint_interval_s=0.0,
                    poll_max_records=200, overlap=True)
    while not worker.cycle_running:
        worker.run_once()
    wait_for(gated.started.is_set, 30, what="the cycle to start on the trainer thread")
    assert isinstance(gated.feeds[0], FeedSnapshot)
    before = (source.pos, len(ckpts.list()), dict(source.committed))
    for _ in range(3):
        worker.run_once()  # the cycle is blocked: these polls run beside it
    assert source.pos > before[0], "ingestion stopped while the cycle ran"
    assert pipeline.pending() > 0  # what arrived meanwhile waits for the next cycle
    assert (len(ckpts.list()), source.committed) == before[1:], "checkpoint during a cycle"
    gated.gate.set()
    wait_for(lambda: (worker.run_once() is not None) and not worker.cycle_running, 60,
             what="the cycle to be settled")
    assert len(ckpts.list()) > before[1]
    # the checkpoint after the cycle commits everything read so far, meanwhile included
    read = {(m.topic, m.partition): m.offset + 1 for m in msgs[: source.pos]}
    assert source.committed == read
    assert worker.last_reports and store.versions("fresh")


def test_a_snapshot_serves_the_cycle_what_the_pipeline_held_when_it_was_taken(
        tiny_bert_dir):
    msgs = sim_messages(600)
    source, pipeline, _, _ = build(TextEncoder(tiny_bert_dir), msgs)
    while source.pos < len(msgs):
        pipeline.step(500)
    fresh, changed = pipeline.pending(), pipeline.changed_items()
    snap = FeedSnapshot.take(pipeline, replay_rows=4000, encode_limit=50)
    assert pipeline.pending() == 0 and snap.pending() == fresh  # taken, as a cycle takes them
    assert snap.changed_items() == min(50, changed)
    assert len(snap.take_fresh()) == fresh and snap.take_fresh() == []
    assert snap.buffered() == len(pipeline.buffers)
    # the gate's set: the newest held-out samples of the window, newest first
    recent = list(pipeline.buffers.recent.items)
    held = [s for s in reversed(recent) if is_holdout(s.request_id, 0.5)][:40]
    gate = snap.held_out_columns(HOLDOUT_BUCKETS // 2, 40)
    assert gate.size == 40
    assert gate.label.tolist() == [s.label for s in held]
    index = pipeline.item_index
    assert gate.item.tolist() == [index.rows[s.item_id] for s in held]
    items, hist, labels = snap.replay_rows(1000, recent_share=1.0, holdout_share=0.5)
    assert 0 < len(items) < 1000 and hist.shape == (len(items), hist.shape[1])
    # only rows of the buffers, none of a held-out bucket
    rows, n = pipeline.buffers.recent_rows, len(pipeline.buffers.recent)
    allowed = set(rows.item[:n][rows.bucket[:n] >= HOLDOUT_BUCKETS // 2].tolist())
    assert set(items.tolist()) <= allowed
    assert set(np.unique(labels).tolist()) <= {0, 1}
