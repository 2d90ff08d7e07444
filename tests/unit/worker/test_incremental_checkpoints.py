"""Incremental checkpoints: a chain of deltas restores exactly what a full one would."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.events import ItemUpdate
from model_store.checkpoints import CheckpointStore
from tests.unit.worker.test_training import ARMS, build, sim_messages
from worker.config import TrainingSettings
from worker.learning.encoder import TextEncoder
from worker.runtime.loop import Worker
from worker.runtime.metrics import Metrics


@pytest.mark.parametrize("context_vectors", [False, True])
def test_a_delta_chain_restores_the_same_state_as_the_live_worker(tiny_bert_dir, tmp_path,
                                                                  context_vectors):
    enc = TextEncoder(tiny_bert_dir)
    cfg = TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=3, batch_size=128,
                           warmup_cycles=1, lr=0.02, dense_every_cycles=3,
                           context_vectors=context_vectors)
    msgs = sim_messages(1600)
    source, pipeline, _, trainer = build(enc, msgs, cfg, arms=ARMS)
    ckpts = CheckpointStore(tmp_path, keep=2)
    worker = Worker(pipeline, ckpts, Metrics(), trainer=trainer, overlap=False,
                    checkpoint_full_every=50, checkpoint_interval_s=0.0)
    step = 0
    while source.pos < len(msgs):
        worker.run_once()
        step += 1
        if step % 3 == 0:  # texts change between checkpoints: their rows must follow
            pipeline.catalog.upsert(ItemUpdate(f"late-{step % 7}", step, f"red hat {step}"))
    worker.checkpoint()
    chain = ckpts.load_latest()
    assert len(chain) >= 3 and chain[0].parent is None
    assert all(c.parent is not None for c in chain[1:])
    assert max(c.nbytes for c in chain[1:]) < chain[0].nbytes  # deltas are smaller

    _, pipeline2, _, trainer2 = build(enc, msgs, cfg, arms=ARMS)
    assert Worker(pipeline2, CheckpointStore(tmp_path), Metrics(), trainer=trainer2,
                  overlap=False).restore()
    live, restored = pipeline.state_dict(), pipeline2.state_dict()
    for key in ("deduper", "catalog", "buffers", "joiner", "offsets", "fresh"):
        assert restored[key] == live[key], key
    n = len(trainer.table)
    assert trainer2.table.ids == trainer.table.ids
    np.testing.assert_array_equal(trainer2.table.semantic[:n], trainer.table.semantic[:n])
    for name, lin in trainer.lineages.items():
        lin2 = trainer2.lineages[name]
        for which in ("model", "served"):
            a = getattr(lin, which).state_dict()
            b = getattr(lin2, which).state_dict()
            for key, value in a.items():
                got, want = b[key].numpy(), value.numpy()
                if key in ("collab.weight", "item_bias.weight", "ctx.weight"):  # past n: unused
                    got, want = got[:n], want[:n]
                np.testing.assert_array_equal(got, want, err_msg=f"{name}/{which}/{key}")
    # The restored worker writes a full checkpoint first, then deltas over it again.
    worker2 = Worker(pipeline2, CheckpointStore(tmp_path, keep=2), Metrics(),
                     trainer=trainer2, overlap=False)
    worker2.restore()
    worker2.checkpoint()
    worker2.checkpoint()
    newest = CheckpointStore(tmp_path).load_latest()
    assert len(newest) == 2 and newest[0].parent is None


def test_dedupe_and_catalog_deltas_follow_new_work_not_the_window():
    from consumers.catalog import Catalog
    from consumers.dedupe import Deduper

    d = Deduper(max_ids=1000, window_ms=10**9)
    for k in range(1500):
        d.seen_before(f"e{k}", k)
    d.trim()
    mark = d.added
    for k in range(1500, 1520):
        d.seen_before(f"e{k}", k)
    d.trim()
    delta = d.state_dict(mark)
    assert delta["delta"] and len(delta["ids"]) == 20
    base = Deduper(max_ids=1000, window_ms=10**9)
    for k in range(1500):
        base.seen_before(f"e{k}", k)
    base.trim()
    base.load_state_dict(delta)
    assert base.state_dict() == d.state_dict()

    cat = Catalog()
    for k in range(500):
        cat.upsert(ItemUpdate(f"i{k}", 1, f"text {k}"))
    mark = cat.stamp
    cat.upsert(ItemUpdate("i7", 2, "new text"))
    cat.upsert(ItemUpdate("brand-new", 2, "hello"))
    delta = cat.state_dict(mark)
    assert sorted(delta["texts"]) == ["brand-new", "i7"]
    again = Catalog()
    again.load_state_dict(Catalog().state_dict())
    for k in range(500):
        again.upsert(ItemUpdate(f"i{k}", 1, f"text {k}"))
    again.take_changed()
    again.load_state_dict(delta)
    assert again.texts == cat.texts
