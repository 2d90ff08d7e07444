"""Trainer over an in-memory pipeline and store: cycles, gate, lineages, cold start."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.checkpoints import CheckpointStore
from model_store.memory_store import MemoryVectorStore
from tests.fakes import ListSource
from worker.config import ArmSettings, TrainingSettings
from worker.learning.encoder import SemanticCache, TextEncoder
from worker.learning.items import ItemTable
from worker.learning.reports import CycleOutcome
from worker.learning.training import Trainer
from worker.runtime.loop import Worker
from worker.runtime.metrics import Metrics
from worker.tools.simulate import CATEGORIES, SimConfig, Simulator

ARMS = [ArmSettings(name="control", lineage="frozen", share=0.5),
        ArmSettings(name="fresh", lineage="incremental", share=0.5)]


def sim_messages(requests: int, seed: int = 3, shift_at: int | None = None) -> list[RawMessage]:
    msgs: list[RawMessage] = []
    clock = itertools.count(1_700_000_000_000, 50)

    def emit(topic, key, value):
        msgs.append(RawMessage(topic, 0, len(msgs), key, value))

    cfg = SimConfig(seed=seed, n_users=300, initial_items=120, shift_at_request=shift_at)
    sim = Simulator(cfg, ARMS, None, emit, clock_ms=lambda: next(clock))
    sim.publish_catalog()
    for _ in sim.run(requests):
        pass
    return msgs


def build(encoder: TextEncoder, msgs, cfg: TrainingSettings | None = None, arms=ARMS):
    cfg = cfg or TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=5, batch_size=256,
                                  warmup_cycles=2, lr=0.02)
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    store = MemoryVectorStore()
    trainer = Trainer(arms, cfg, ItemTable(encoder.dim), SemanticCache(encoder).get, store,
                      dim=16, seed=0)
    return source, pipeline, store, trainer


def drive(source, pipeline, trainer, batch=400):
    now = itertools.count()
    reports = []
    while source.pos < len(source.messages):
        pipeline.step(batch)
        if trainer.due(float(next(now)), pipeline):
            reports.extend(trainer.run_cycle(pipeline, float(next(now))))
    return reports


def test_cycles_publish_versions_and_frozen_stops_training(tiny_bert_dir):
    enc = TextEncoder(tiny_bert_dir)
    source, pipeline, store, trainer = build(enc, sim_messages(1500))
    reports = drive(source, pipeline, trainer)
    assert trainer.cycles >= 5
    fresh = [r for r in reports if r.arm == "fresh"]
    control = [r for r in reports if r.arm == "control"]
    assert all(r.n_trained == 0 for r in control[2:])  # frozen after two warm-up cycles
    assert sum(r.n_trained > 0 for r in fresh) >= 4
    assert store.versions("fresh")[0] == trainer.lineages["fresh"].published
    version, vecs, found = store.lookup("fresh", ["item-000001", "item-000002"])
    assert found.all() and vecs.shape == (2, 17)
    info = store.current("fresh")
    assert info.item_count == len(trainer.table) and len(info.user_prior) == 16 * 4
    aucs = [r.progressive_auc for r in fresh if r.progressive_auc == r.progressive_auc]
    assert aucs, "progressive validation never produced an AUC"


def test_gate_rejects_a_candidate_worse_than_served(tiny_bert_dir):
    enc = TextEncoder(tiny_bert_dir)
    msgs = sim_messages(1200)
    cfg = TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=5, batch_size=256, lr=0.02,
                           gate_tolerance=0.0, holdout_share=0.3)
    source, pipeline, store, trainer = build(enc, msgs, cfg, arms=[ARMS[1]])
    drive(source, pipeline, trainer)
    lin = trainer.lineages["fresh"]
    published = lin.published
    with np.errstate(all="ignore"):
        import torch

        with torch.no_grad():  # sabotage the candidate: huge random item biases
            lin.model.item_bias.weight.normal_(0, 20)
    pipeline.fresh = list(pipeline.buffers.recent.items)[-300:]
    trainer.cfg = cfg.model_copy(update={"steps_per_cycle": 1, "lr": 1e-9})
    for lineage in trainer.lineages.values():
        lineage.lr = 1e-9
    report = trainer.run_cycle(pipeline, 1e9)[0]
    assert report.outcome is CycleOutcome.REJECTED and report.rejected_in_a_row == 1
    assert report.gate_candidate_loss > report.gate_served_loss
    assert lin.published == published and store.current("fresh").version == published
    # kept, not thrown away: the candidate goes on training from where it is
    assert not np.array_equal(lin.model.item_bias.weight.detach().numpy(),
                              lin.served.item_bias.weight.detach().numpy())
    for n in range(2, cfg.gate_max_rejections + 1):
        pipeline.fresh = list(pipeline.buffers.recent.items)[-300:]
        report = trainer.run_cycle(pipeline, 1e9 + n)[0]
        assert report.outcome is CycleOutcome.REJECTED and report.rejected_in_a_row == n
    # rejected gate_max_rejections times in a row: restarted from the served model
    assert np.array_equal(lin.model.item_bias.weight.detach().numpy(),
                          lin.served.item_bias.weight.detach().numpy())
    assert lin.rejected_in_a_row == 0


def test_worker_checkpoint_restores_trainer_and_buffers(tiny_bert_dir, tmp_path):
    enc = TextEncoder(tiny_bert_dir)
    msgs = sim_messages(800)
    source, pipeline, store, trainer = build(enc, msgs)
    worker = Worker(pipeline, CheckpointStore(tmp_path), Metrics(), trainer=trainer)
    while source.pos < len(msgs):
        worker.run_once()
    worker.checkpoint()
    source2, pipeline2, _, trainer2 = build(enc, msgs)
    worker2 = Worker(pipeline2, CheckpointStore(tmp_path), Metrics(), trainer=trainer2)
    assert worker2.restore()
    assert trainer2.table.ids == trainer.table.ids
    assert list(pipeline2.buffers.recent.items) == list(pipeline.buffers.recent.items)
    for name in ("control", "fresh"):
        a, b = trainer.lineages[name], trainer2.lineages[name]
        assert a.published == b.published
        np.testing.assert_array_equal(a.served.export(len(trainer.table), trainer.table.semantic),
                                      b.served.export(len(trainer2.table), trainer2.table.semantic))


def test_corrupt_newest_checkpoint_falls_back_to_last_good(tiny_bert_dir, tmp_path):
    enc = TextEncoder(tiny_bert_dir)
    msgs = sim_messages(400)
    source, pipeline, store, trainer = build(enc, msgs)
    worker = Worker(pipeline, CheckpointStore(tmp_path), Metrics(), trainer=trainer)
    while source.pos < len(msgs) // 2:
        worker.run_once()
    worker.checkpoint()
    good_ids = list(trainer.table.ids)
    while source.pos < len(msgs):
        worker.run_once()
    worker.checkpoint()
    newest = CheckpointStore(tmp_path).list()[-1]
    (newest / "tensors.safetensors").write_bytes(b"not a safetensors file")
    _, pipeline2, _, trainer2 = build(enc, msgs)
    worker2 = Worker(pipeline2, CheckpointStore(tmp_path), Metrics(), trainer=trainer2)
    assert worker2.restore()
    assert trainer2.table.ids == good_ids


@pytest.mark.slow
def test_text_only_new_item_lands_near_its_own_kind(real_encoder):
    # The text projection trains every cycle here: four cycles are all this run has.
    cfg = TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=5, batch_size=256,
                           warmup_cycles=2, lr=0.02, dense_every_cycles=1)
    source, pipeline, store, trainer = build(real_encoder, sim_messages(1500), cfg,
                                             arms=[ARMS[1]])
    drive(source, pipeline, trainer)
    new_id = "brand-new-shoe"
    from consumers.events import ItemUpdate

    pipeline.catalog.upsert(ItemUpdate(new_id, 1, "sporty red running shoes, edition 3"))
    trainer.run_cycle(pipeline, 1e12)
    _, ids, mat = store.all_vectors("fresh")
    w = {i: v[:-1] / np.linalg.norm(v[:-1]) for i, v in zip(ids, mat, strict=True)}
    texts = pipeline.catalog.texts
    same = [w[i] @ w[new_id] for i in ids if i != new_id and "running shoes" in texts.get(i, "")]
    other = [w[i] @ w[new_id] for i in ids if i != new_id and i in texts
             and "running shoes" not in texts[i]]
    assert len(same) > 5 and len(other) > 20
    assert np.mean(same) > np.mean(other) + 0.1
    assert CATEGORIES[0] == "running shoes"


def test_distilled_student_learns_from_a_larger_teacher(tiny_bert_dir):
    enc = TextEncoder(tiny_bert_dir)
    arms = [ArmSettings(name="teacher", lineage="incremental", share=0.5, dim=32),
            ArmSettings(name="student", lineage="distilled", share=0.5, dim=8,
                        teacher="teacher")]
    source, pipeline, store, trainer = build(enc, sim_messages(1200), arms=arms)
    assert [lin.name for lin in trainer._order] == ["teacher", "student"]  # teacher first
    reports = drive(source, pipeline, trainer)
    student = [r for r in reports if r.arm == "student"]
    assert sum(r.n_trained > 0 for r in student) >= 3
    assert store.current("student").dim == 9 and store.current("teacher").dim == 33
    # the student's predictions track the teacher's better than an untrained model's do
    from worker.learning.batches import make_batch
    from worker.learning.model import FreshRecModel

    batch = make_batch(list(pipeline.buffers.recent.items)[-500:], trainer.table, trainer.device)
    sem = trainer.table.semantic
    args = (batch.items, batch.history, batch.mask, sem)
    t = torch.sigmoid(trainer.lineages["teacher"].model(*args))
    s = torch.sigmoid(trainer.lineages["student"].model(*args))
    fresh_model = FreshRecModel(trainer.table.text_dim, 8, capacity=trainer.table.capacity, seed=9)
    u = torch.sigmoid(fresh_model(batch.items, batch.history, batch.mask, sem))
    assert float((s - t).abs().mean()) < float((u - t).abs().mean())


def test_a_trainer_restored_from_an_older_checkpoint_never_reuses_a_version_name(
        tiny_bert_dir):
    enc = TextEncoder(tiny_bert_dir)
    msgs = sim_messages(1200)
    source, pipeline, store, trainer = build(enc, msgs[: len(msgs) // 2])
    drive(source, pipeline, trainer)
    state, tensors = trainer.state()  # the checkpoint a kill -9 falls back to
    old = trainer.lineages["fresh"].published
    source.messages.extend(msgs[len(msgs) // 2:])
    while source.pos < len(source.messages):  # more cycles, more versions
        pipeline.step(400)
        trainer.run_cycle(pipeline, 1e6 + source.pos)
    newest = store.versions("fresh")[0]
    assert newest != old
    restored = Trainer(ARMS, trainer.cfg, ItemTable(enc.dim), SemanticCache(enc).get, store,
                       dim=16, seed=0)
    restored.load(state, tensors)
    pipeline.fresh = list(pipeline.buffers.recent.items)[-300:]
    restored.run_cycle(pipeline, 1e9)
    assert store.versions("fresh")[0] > newest  # a new name, the published ones untouched
    assert restored.lineages["fresh"].seq == int(store.versions("fresh")[0].rsplit("-", 1)[1])


def test_delta_versions_equal_the_full_export_of_the_served_model(tiny_bert_dir):
    """Between dense cycles a version holds only changed rows; read whole, it is exact."""
    enc = TextEncoder(tiny_bert_dir)
    cfg = TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=3, batch_size=128,
                           warmup_cycles=1, lr=0.02, dense_every_cycles=4, publish_max_layers=3,
                           gate_tolerance=10.0)
    msgs = sim_messages(2400)
    source, pipeline, store, trainer = build(enc, msgs, cfg, arms=[ARMS[1]])
    lin = trainer.lineages["fresh"]
    layers, written = [], []
    from consumers.events import ItemUpdate
    now = itertools.count()
    while source.pos < len(source.messages):
        pipeline.step(150)
        if source.pos % 600 < 150:  # a text changes now and then: its row must be re-sent
            pipeline.catalog.upsert(ItemUpdate(f"late-{source.pos}", 1, "blue wool hat"))
        if not trainer.due(float(next(now)), pipeline):
            continue
        (report,) = trainer.run_cycle(pipeline, float(next(now)))
        if report.published_version is None:
            continue
        info = store.current("fresh")
        layers.append(len(info.layers()))
        written.append(report.published_rows)
        _, ids, mat = store.all_vectors("fresh")
        want = lin.served.export(len(trainer.table), trainer.table.semantic)
        rows = trainer.table.lookup(ids)
        assert sorted(ids) == sorted(trainer.table.ids)
        np.testing.assert_allclose(mat, want[rows], rtol=1e-6, atol=1e-6)
    assert max(layers) == 3 and 2 in layers  # deltas happened, and the chain was capped
    assert min(written) < len(trainer.table) / 2  # a delta writes far fewer rows
