"""A cap on live items: least recently seen evicted, rows reused, versions and checkpoints exact."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.columns import RowIndex
from consumers.dlq import MemoryDeadLetters
from consumers.eviction import ItemEvictor
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from consumers.replay import ReplayBuffers
from model_store.checkpoints import CheckpointStore
from model_store.memory_store import MemoryVectorStore
from tests.fakes import ListSource
from tests.unit.worker.test_training import ARMS, sim_messages
from worker.config import TrainingSettings
from worker.learning.encoder import SemanticCache, TextEncoder
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.runtime.loop import Worker
from worker.runtime.metrics import Metrics

CAP = 60


def build(enc, msgs, tmp_path, cap=CAP):
    cfg = TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=3, batch_size=64,
                           warmup_cycles=1, lr=0.02, dense_every_cycles=3, gate_tolerance=10.0,
                           encode_per_cycle=20)
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000),
                              buffers=ReplayBuffers(40, 40))
    store = MemoryVectorStore()
    trainer = Trainer(ARMS, cfg, ItemTable(enc.dim, index=pipeline.item_index),
                      SemanticCache(enc).get, store, dim=16, seed=0)
    worker = Worker(pipeline, CheckpointStore(tmp_path, keep=2), Metrics(), trainer=trainer,
                    overlap=False, checkpoint_full_every=50, evictor=ItemEvictor(cap),
                    poll_max_records=100)
    return source, pipeline, store, trainer, worker


def test_row_index_reuses_freed_rows_and_says_which_rows_are_new():
    index = RowIndex(["a", "b", "c", "d"])
    mark = index.clock
    index.tick = 5
    index.row("c"), index.row("d")  # a and b were seen longest ago
    rows = index.least_recent(2, keep=np.array([0]))  # a is pinned (a buffer names it)
    assert sorted(rows.tolist()) == [1, 2] or sorted(rows.tolist()) == [1, 3]
    assert index.evict([1]) == ["b"] and index.live == 3 and index.ids[1] == ""
    assert index.row("e") == 1 and index.rows["e"] == 1  # the freed row, reused
    assert index.created_since(mark).tolist() == [1]
    copy = RowIndex()
    copy.reset(index.ids, index.clock)
    assert copy.rows == index.rows and copy.free == index.free


@pytest.mark.parametrize("dense_every", [3])
def test_a_capped_worker_stays_bounded_and_publishes_and_restores_exactly(
        tiny_bert_dir, tmp_path, dense_every):
    enc = TextEncoder(tiny_bert_dir)
    msgs = sim_messages(2400)
    source, pipeline, store, trainer, worker = build(enc, msgs, tmp_path)
    while source.pos < len(msgs):
        worker.run_once()
    pipeline.fresh = list(pipeline.buffers.recent.items)[-30:]
    trainer.run_cycle(pipeline, 1e9)  # publish after the last eviction too
    worker.checkpoint()
    index = pipeline.item_index
    assert worker.evictor is not None and worker.evictor.evicted > 1000  # it evicted a lot
    # The served version, read whole, is exactly the served model over the live items.
    lin = trainer.lineages["fresh"]
    _, ids, mat = store.all_vectors("fresh")
    assert set(ids) <= set(index.rows)
    want = lin.served.export_rows(np.array([index.rows[i] for i in ids]),
                                  trainer.table.semantic)
    np.testing.assert_allclose(mat, want, rtol=1e-6, atol=1e-6)
    # The checkpoint chain restores every live row.
    source2 = ListSource(msgs)
    pipeline2 = IngestPipeline(source2, MemoryDeadLetters(), joiner=Joiner(window_ms=5000),
                               buffers=ReplayBuffers(40, 40))
    trainer2 = Trainer(ARMS, trainer.cfg, ItemTable(enc.dim, index=pipeline2.item_index),
                       SemanticCache(enc).get, MemoryVectorStore(), dim=16, seed=0)
    assert Worker(pipeline2, CheckpointStore(tmp_path), Metrics(), trainer=trainer2,
                  overlap=False).restore()
    assert pipeline2.item_index.ids == index.ids
    assert pipeline2.catalog.texts == pipeline.catalog.texts
    live = np.array(sorted(index.rows.values()))
    np.testing.assert_array_equal(trainer2.table.semantic[live], trainer.table.semantic[live])
    for name in ("control", "fresh"):
        for which in ("model", "served"):
            a = getattr(trainer.lineages[name], which).collab.weight.detach()[live]
            b = getattr(trainer2.lineages[name], which).collab.weight.detach()[live]
            np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=f"{name}/{which}")


def test_the_cap_holds_under_a_stream_of_all_distinct_items(tmp_path):
    from consumers.events import RawMessage
    from tests.helpers import encode, event

    msgs = []
    for k in range(3000):  # every event a new item (and user, request): adversarial
        msgs.append(RawMessage("freshrec.items", 0, k, None, encode(
            {"item_id": f"i{k}", "ts": 1, "text": f"item {k}"})))
        for etype, dt in (("impression", 0), ("click", 1)):
            msgs.append(RawMessage("freshrec.events", 0, len(msgs), None, encode(event(
                etype, eid=f"{etype}-{k}", ts=1000 + 10 * k + dt, user=f"u{k}", item=f"i{k}",
                req=f"r{k}"))))
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5),
                              buffers=ReplayBuffers(50, 50))
    metrics = Metrics()
    worker = Worker(pipeline, CheckpointStore(tmp_path), metrics, poll_max_records=90,
                    evictor=ItemEvictor(200))
    most = 0
    while source.pos < len(msgs):
        worker.run_once()
        most = max(most, len(pipeline.item_index))
    # Rows for at most one poll's new items (90 messages) over the cap, then reused.
    assert most <= 200 + 90 and len(pipeline.catalog) <= 200 + 90
    assert worker.evictor is not None and worker.evictor.evicted >= 3000 - 290
    got = metrics.state_evicted.labels("items")._value.get()
    assert got == worker.evictor.evicted


def test_catalog_texts_of_items_no_event_names_are_capped_too(tmp_path):
    from consumers.events import RawMessage
    from tests.helpers import encode

    msgs = [RawMessage("freshrec.items", 0, k, None, encode(
        {"item_id": f"i{k}", "ts": 1, "text": f"item {k}"})) for k in range(2000)]
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters())
    metrics = Metrics()
    worker = Worker(pipeline, CheckpointStore(tmp_path), metrics, poll_max_records=100,
                    evictor=ItemEvictor(300))
    while source.pos < len(msgs):
        worker.run_once()
        assert len(pipeline.catalog) <= 300 + 100
    assert "i1999" in pipeline.catalog.texts and "i0" not in pipeline.catalog.texts
    assert metrics.state_evicted.labels("catalog_texts")._value.get() >= 2000 - 400


def test_forgetting_rows_the_table_has_not_grown_to_yet(tiny_bert_dir):
    # Ingestion hands out rows between cycles; an eviction then may name rows past the
    # table's last sync (found by bench.memory: an IndexError in the worker).
    enc = TextEncoder(tiny_bert_dir)
    index = RowIndex()
    trainer = Trainer(ARMS, TrainingSettings(), ItemTable(enc.dim, index=index),
                      SemanticCache(enc).get, MemoryVectorStore(), dim=8)
    index.extend(f"i{k}" for k in range(3000))
    rows = np.arange(2500, 2600)
    index.evict(rows)
    trainer.forget(rows)
    assert trainer.table.capacity >= 3000 and not trainer.table.has_text[rows].any()
