"""Two trainer ranks (gloo, CPU) run whole cycles in lockstep and stay one model.

Each rank ingests its own half of the users' events through the real pipeline, so the
ranks meet items in different orders and number their rows differently; the catalog
(texts) is the same on both. After several cycles (warm-up, dense and sparse-only,
gate, publish) both ranks must hold the same vector for every item id, rank 0 alone must
have written versions, and both must have taken the same decisions.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.memory_store import MemoryVectorStore
from tests.fakes import ListSource
from worker.config import ArmSettings, TrainingSettings
from worker.learning.items import ItemTable
from worker.learning.ranked import GlobalRows

ITEMS, TEXT_DIM, CYCLES, PER_CYCLE = 400, 16, 8, 250


def events(rank: int, world: int) -> list[RawMessage]:
    """Impressions and clicks of the users whose number % world == rank."""
    rng, out = random.Random(3), []
    ctr = np.random.default_rng(3).beta(1, 4, ITEMS)
    for n in range(CYCLES * PER_CYCLE * world):
        user = rng.randrange(200)
        items = [rng.randrange(ITEMS) for _ in range(3)]
        clicks = [rng.random() < ctr[i] for i in items]
        if user % world != rank:
            continue
        if rank == 1:  # this rank meets items in another order: other local rows
            items = [ITEMS - 1 - i for i in items]
        base = {"ts": 1_700_000_000_000 + n * 10, "user_id": f"u{user}",
                "request_id": f"r{n}", "arm": "a", "propensity": 1.0}
        for slot, (item, click) in enumerate(zip(items, clicks, strict=True)):
            ev = {**base, "item_id": f"i{item:04d}", "position": slot}
            kinds = ["impression", "click"] if click else ["impression"]
            for kind in kinds:
                value = json.dumps({**ev, "event_id": f"{n}-{slot}-{kind}", "type": kind})
                out.append(RawMessage("freshrec.events", 0, len(out), None, value.encode()))
    return out


def run_rank(rank: int, world: int, out: Path) -> None:
    """Ingest this rank's events and run CYCLES lockstep cycles; save vectors by id."""
    import torch.distributed as dist

    from worker.learning.ranked import RankedTrainer, Ranks

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # 127.0.0.1 only
    dist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}", rank=rank,
                            world_size=world)
    ranks = Ranks(rank, world, dist.new_group(backend="gloo"))
    torch.manual_seed(rank)  # nothing may depend on it: rank 0's start is adopted
    source = ListSource(events(rank, world))
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=200))
    table = ItemTable(TEXT_DIM, torch.device("cpu"), pipeline.item_index)
    cfg = TrainingSettings(cycle_interval_s=0, batch_size=128, warmup_cycles=2,
                           dense_every_cycles=3, gate_samples=256, holdout_share=0.2)
    store = MemoryVectorStore()
    trainer = RankedTrainer([ArmSettings(name="a", share=1.0)], cfg, table,
                            lambda texts: np.stack([_text(t) for t in texts]), store,
                            dim=8, seed=0, ranks=ranks)
    # The catalog: every rank reads it whole (same texts), in its own time (and here, to
    # give the ranks different row numbers from the start, in its own order).
    catalog = [(f"i{k:04d}", f"text {k}") for k in range(ITEMS)][:: 1 if rank == 0 else -1]
    table.set_semantic([i for i, _ in catalog], np.stack([_text(t) for _, t in catalog]))
    outcomes, step = [], 0
    while step < CYCLES:
        pipeline.step(len(source.messages) // CYCLES + 1)
        if trainer.due(float(step), pipeline):
            outcomes.append([r.outcome.value for r in trainer.run_cycle(pipeline, float(step))])
            step += 1
    lin = trainer.lineages["a"]
    ids = list(table.ids)
    vectors = lin.model.export(len(table), table.semantic)
    order = np.argsort(ids)
    np.savez(out / f"rank{rank}.npz", ids=np.array(ids)[order], vectors=vectors[order],
             versions=np.array(store.versions("a")), outcomes=np.array(outcomes),
             local_first=np.array(ids[:5]))
    dist.barrier()  # leave the group before exiting: gloo threads alive at exit abort it
    dist.destroy_process_group()


def _text(text: str) -> np.ndarray:
    seed = int(text.rsplit(maxsplit=1)[-1])
    return np.random.default_rng(seed).normal(size=TEXT_DIM).astype(np.float32) / 4


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ranks_hold_one_model_and_rank_zero_publishes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_rank, args=(r, 2, tmp_path)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert list(r0["local_first"]) != list(r1["local_first"])  # numbered differently
    np.testing.assert_array_equal(r0["ids"], r1["ids"])  # every rank holds every item
    np.testing.assert_allclose(r0["vectors"], r1["vectors"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(r0["outcomes"], r1["outcomes"])  # one decision each cycle
    assert "published" in set(r0["outcomes"].ravel())
    assert len(r0["versions"]) > 0 and len(r1["versions"]) == 0  # rank 0 alone writes


def test_global_rows_number_new_ids_in_rank_order_and_map_both_ways() -> None:
    rows = GlobalRows()
    new = rows.unseen([["b", "a"], ["c", "a"]])
    assert new == ["b", "a", "c"]
    rows.add(new, np.array([1, 0, 2]))  # this rank holds b at 1, a at 0, c at 2
    np.testing.assert_array_equal(rows.to_global(np.array([0, 1, 2])), [1, 0, 2])
    np.testing.assert_array_equal(rows.to_local(np.array([0, 1, 2])), [1, 0, 2])
    assert rows.unseen([["a", "d"], ["d"]]) == ["d"]
    with pytest.raises(RuntimeError):
        rows.to_global(np.array([3]))  # a row handed out locally, not agreed on yet
