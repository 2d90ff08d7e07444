"""A catalog of bare ids (no texts, as in the Open Bandit Dataset): vectors must still learn.

Users and items fall in two taste groups with equal popularity, so ranking by popularity is
no better than chance, while vectors that learnt the taste rank a user's own group first.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.memory_store import MemoryVectorStore
from tests.fakes import ListSource
from worker.config import ArmSettings, TrainingSettings
from worker.learning.evaluation import auc
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.learning.user_tower import UserTower
from worker.tools.synthetic import encode, event

USERS, ITEMS = 300, 120


def clicks(rng: random.Random, user: int, item: int) -> bool:
    return rng.random() < (0.35 if user % 2 == item % 2 else 0.04)


def stream(requests: int, seed: int) -> list[RawMessage]:
    rng, clock = random.Random(seed), itertools.count(1_700_000_000_000, 50)
    out: list[RawMessage] = []
    for r in range(requests):
        user, ts = rng.randrange(USERS), next(clock)
        for slot in range(2):
            item = rng.randrange(ITEMS)
            common = {"user": f"u{user}", "item": f"i{item}", "req": f"r{r}", "arm": "fresh"}
            evs = [event("impression", eid=f"imp{r}-{slot}", ts=ts, position=slot, **common)]
            if clicks(rng, user, item):
                evs.append(event("click", eid=f"clk{r}-{slot}", ts=ts + 1000, **common))
            out.extend(RawMessage("freshrec.events", 0, len(out) + k, None, encode(e))
                       for k, e in enumerate(evs))
    return out


def no_texts(texts: object) -> np.ndarray:
    raise AssertionError("an id-only catalog has no texts to encode")


@pytest.mark.parametrize("context_vectors", [False, True])
def test_id_only_vectors_move_and_rank_better_than_popularity(context_vectors: bool) -> None:
    msgs = stream(12_000, seed=1)
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    store = MemoryVectorStore()
    cfg = TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=10, batch_size=256,
                           warmup_cycles=0, lr=0.03, gate_samples=512,
                           context_vectors=context_vectors)
    trainer = Trainer([ArmSettings(name="fresh", lineage="incremental", share=1.0)], cfg,
                      ItemTable(16), no_texts, store, dim=16, seed=0)
    now = itertools.count()
    while source.pos < len(msgs):
        pipeline.step(500)
        if trainer.due(float(next(now)), pipeline):
            trainer.run_cycle(pipeline, float(next(now)))
    info = store.current("fresh")
    assert info is not None
    ids = [f"i{i}" for i in range(ITEMS)]
    _, vectors, found = store.lookup("fresh", ids)
    assert found.all()
    assert vectors.shape[1] == (33 if context_vectors else 17) == info.dim
    assert float(np.abs(vectors[:, :16]).max()) > 0.05  # the w part moved, not only biases
    prior = np.frombuffer(info.user_prior, "<f4")
    assert float(np.abs(prior).max()) > 0
    tower = UserTower.from_bytes(info.user_prior, info.user_tower)

    # Held-out traffic: each user's learnt history + a fresh draw of impressions.
    popularity = np.zeros(ITEMS)
    for m in msgs:
        if b'"click"' in m.value:
            popularity[int(m.value.split(b'"item_id":"i')[1].split(b'"')[0])] += 1
    rng = random.Random(99)
    scores_model, scores_pop, labels = [], [], []
    for _ in range(6000):
        user, item = rng.randrange(USERS), rng.randrange(ITEMS)
        history = [int(h[1:]) for h in pipeline.joiner.history(f"u{user}")]
        if not history:
            continue
        u = tower.user_vector(vectors[history])
        scores_model.append(float(vectors[item] @ u))
        scores_pop.append(popularity[item])
        labels.append(float(clicks(rng, user, item)))
    y = np.array(labels)
    model_auc, pop_auc = auc(y, np.array(scores_model)), auc(y, np.array(scores_pop))
    print(f"id-only AUC: vectors {model_auc:.3f}, popularity {pop_auc:.3f}")
    assert model_auc > pop_auc + 0.1, (model_auc, pop_auc)
    assert model_auc > 0.7, model_auc


def test_a_cycle_under_a_backlog_is_bounded_by_max_steps() -> None:
    msgs = stream(3000, seed=2)
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    cfg = TrainingSettings(cycle_interval_s=0.0, steps_per_cycle=2, batch_size=64,
                           warmup_cycles=0, max_steps_per_cycle=5)
    trainer = Trainer([ArmSettings(name="fresh", lineage="incremental", share=1.0)], cfg,
                      ItemTable(16), no_texts, MemoryVectorStore(), dim=8, seed=0)
    while source.pos < len(msgs):
        pipeline.step(5000)
    assert pipeline.pending() > 1000  # a backlog: ~30 steps' worth of new samples
    steps = []
    real_step = trainer.step
    trainer.step = lambda lin, batch, rows: steps.append(1) or real_step(lin, batch, rows)  # type: ignore[method-assign]
    trainer.run_cycle(pipeline, 0.0)
    assert len(steps) == 5
