"""Two data-parallel trainer ranks (gloo, CPU) learn what one process learns.

Each rank trains on half of every batch; :class:`GradSync` averages the gradients. The
item vectors a publish would write (``export``) must equal those of one process training
on the whole batches in the same order, within float tolerance, through dense and
sparse-only (two-speed) steps, with the same rows marked touched.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.config import ArmSettings, TrainingSettings
from worker.learning.batches import batch_from_rows
from worker.learning.items import ItemTable
from worker.learning.training import Trainer

ITEMS, TEXT_DIM, BATCH, STEPS = 300, 16, 64, 12


def train(rank: int, world: int, out: Path) -> None:
    """Train one lineage for STEPS steps on this rank's share of each batch; save vectors."""
    sync = None
    if world > 1:
        import torch.distributed as dist

        from worker.learning.distributed import GradSync

        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # 127.0.0.1 only
        dist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}",
                                rank=rank, world_size=world)
        sync = GradSync()
    torch.manual_seed(0)
    table = ItemTable(TEXT_DIM)
    table.set_semantic([f"i{k}" for k in range(ITEMS)],
                       np.random.default_rng(0).normal(size=(ITEMS, TEXT_DIM)))
    cfg = TrainingSettings(batch_size=BATCH, warmup_cycles=0, dense_every_cycles=2)
    trainer = Trainer([ArmSettings(name="a", share=1.0)], cfg, table,
                      lambda texts: np.zeros((len(texts), TEXT_DIM), np.float32),
                      store=None, dim=8, seed=0, grad_sync=sync)  # type: ignore[arg-type]
    lin = trainer.lineages["a"]
    lin.grow(len(table))
    share = BATCH // world
    for k in range(STEPS):
        lin.cycles = k // 3  # cycles 0 and 2 train dense parameters, 1 and 3 only rows
        rng = np.random.default_rng(100 + k)
        items = rng.integers(0, ITEMS, BATCH)
        hist = rng.integers(-1, ITEMS, (BATCH, 5)).astype(np.int32)
        labels = (rng.random(BATCH) < 0.3).astype(np.int32)
        part = slice(rank * share, (rank + 1) * share)
        looked_up = np.concatenate([items[part], np.maximum(hist[part].ravel(), 0)])
        trainer.step(lin, batch_from_rows(items[part], hist[part], labels[part],
                                          trainer.device), looked_up)
    np.savez(out / f"rank{rank}-of-{world}.npz",
             vectors=lin.model.export(len(table), table.semantic), stamps=lin.row_stamp,
             prior=lin.model.prior())
    if world > 1:
        # Leave the group before the process exits: gloo's threads still running at exit
        # abort it ("terminate called without an active exception", SIGABRT).
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_publish_what_one_process_learns(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ranks = [ctx.Process(target=train, args=(r, 2, tmp_path)) for r in range(2)]
    for p in ranks:
        p.start()
    train(0, 1, tmp_path)  # the reference, meanwhile, in this process
    for p in ranks:
        p.join(120)
        assert p.exitcode == 0
    one = np.load(tmp_path / "rank0-of-1.npz")
    r0, r1 = np.load(tmp_path / "rank0-of-2.npz"), np.load(tmp_path / "rank1-of-2.npz")
    # The replicas never exchange weights, only gradients: they must stay identical.
    np.testing.assert_array_equal(r0["vectors"], r1["vectors"])
    np.testing.assert_array_equal(r0["stamps"], one["stamps"])  # same rows marked per step
    # And equal one process on the whole batches, up to the order of float sums.
    np.testing.assert_allclose(r0["vectors"], one["vectors"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(r0["prior"], one["prior"], rtol=0, atol=2e-5)
    moved = np.abs(one["vectors"] - train_untouched(tmp_path)).max()
    assert moved > 1e-2  # the steps did move the vectors (the comparison is not vacuous)


def train_untouched(tmp_path: Path) -> np.ndarray:
    """The vectors before any step, built like :func:`train` builds its model."""
    torch.manual_seed(0)
    table = ItemTable(TEXT_DIM)
    table.set_semantic([f"i{k}" for k in range(ITEMS)],
                       np.random.default_rng(0).normal(size=(ITEMS, TEXT_DIM)))
    trainer = Trainer([ArmSettings(name="a", share=1.0)], TrainingSettings(), table,
                      lambda texts: np.zeros((len(texts), TEXT_DIM), np.float32),
                      store=None, dim=8, seed=0)  # type: ignore[arg-type]
    lin = trainer.lineages["a"]
    lin.grow(len(table))
    return lin.model.export(len(table), table.semantic)
