"""freshrec's arms inside the real-data bench: the real learning path, scored as served.

Events go through :class:`consumers.pipeline.IngestPipeline` over an in-memory source and
the :class:`worker.learning.training.Trainer`'s cycles (progressive validation, training,
the gate, publishes to a :class:`model_store.memory_store.MemoryVectorStore`). Scores come
from what was published: each arm's current version, read whole from the store, and the
user vector the version's :class:`worker.learning.user_tower.UserTower` builds from the
user's recent positives (newest first, as the join keeps them), with items the version
lacks scored as the mean of the others, as :class:`worker.serving.ranker.Ranker` does.
"""

from __future__ import annotations

import itertools

import msgspec
import numpy as np

from bench.movielens import Ratings
from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline, Topics
from consumers.replay import ReplayBuffers
from model_store.memory_store import MemoryVectorStore
from worker.config import ArmSettings, TrainingSettings
from worker.learning.encoder import SemanticCache, TextEncoder
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.learning.user_tower import UserTower
from worker.tools.synthetic import ListSource

ARMS = {"fresh": "freshrec, incremental arm", "frozen": "freshrec, frozen after warm-up"}
HISTORY = 10  # recent positives a serving request carries (the joiner's history length)


def recent_first(history: np.ndarray, n: int) -> np.ndarray:
    """The last ``n`` distinct items of an oldest-first history, newest first (as joined)."""
    out: list[int] = []
    for item in history[::-1]:
        if int(item) not in out:
            out.append(int(item))
            if len(out) == n:
                break
    return np.array(out, np.int64)


class FreshrecArms:
    """An incremental and a frozen-after-warm-up lineage on one pipeline and trainer."""

    def __init__(self, data: Ratings, seed: int = 0,
                 training: TrainingSettings | None = None) -> None:
        self.data, self.topics = data, Topics()
        self.names = list(ARMS.values())
        self.source = ListSource([])
        self.offsets = itertools.count()
        self.pipeline = IngestPipeline(
            self.source, MemoryDeadLetters(), self.topics, joiner=Joiner(window_ms=60_000),
            buffers=ReplayBuffers(100_000, 100_000, seed=seed))
        encoder = TextEncoder()
        self.store = MemoryVectorStore()
        self.cfg = training or TrainingSettings(cycle_interval_s=0)
        arms = [ArmSettings(name="fresh", lineage="incremental", share=0.5),
                ArmSettings(name="frozen", lineage="frozen", share=0.5)]
        self.trainer = Trainer(arms, self.cfg, ItemTable(encoder.dim),
                               SemanticCache(encoder).get, self.store, seed=seed)
        first_ts = int(data.ts_s[0]) * 1000
        for item, text in zip(data.item_ids, data.texts, strict=True):
            self.source.messages.append(RawMessage(
                self.topics.items, 0, next(self.offsets), item.encode(),
                msgspec.json.encode({"item_id": item, "ts": first_ts, "text": text}),
                first_ts))
        self.served: dict[str, tuple[np.ndarray, np.ndarray, UserTower]] = {}
        self.cycles = self.rejected = 0
        self.cycle()  # the catalog encoded and published before the first request

    def feed(self, values: list[bytes], ts_ms: int) -> None:
        """One request's events, produced to the events topic."""
        for value in values:
            self.source.messages.append(RawMessage(self.topics.events, 0, next(self.offsets),
                                                   None, value, ts_ms))

    def cycle(self) -> None:
        """Ingest everything produced so far, run one cycle, read the new versions."""
        while self.source.pos < len(self.source.messages):
            self.pipeline.step(5000)
        self.source.messages, self.source.pos = [], 0
        reports = self.trainer.run_cycle(self.pipeline, float(self.cycles))
        self.cycles += 1
        self.rejected += sum(r.outcome.value == "rejected" for r in reports if r.arm == "fresh")
        ids = self.data.item_ids
        for arm in ARMS:
            info = self.store.current(arm)
            if info is None:
                continue
            _, vecs, found = self.store.lookup(arm, ids)
            self.served[arm] = (np.nan_to_num(vecs), found,
                                UserTower.from_bytes(info.user_prior, info.user_tower))

    def score(self, users: np.ndarray, histories: list[np.ndarray]
              ) -> list[tuple[str, np.ndarray]]:
        """Each arm's scores (len(users), n_items) from its current version."""
        out = []
        for arm, name in ARMS.items():
            if arm not in self.served:
                out.append((name, np.zeros((len(users), self.data.n_items), np.float32)))
                continue
            vecs, found, tower = self.served[arm]
            rows = []
            for hist in histories:
                h = recent_first(hist, HISTORY)
                rows.append(tower.user_vector(vecs[h], found[h]))
            scores = np.stack(rows) @ vecs.T
            if not found.all():  # not in this version yet: the mean of the others
                fill = scores[:, found].mean(1, keepdims=True) if found.any() else 0.0
                scores = np.where(found, scores, fill)
            out.append((name, scores))
        return out

    def describe(self) -> str:
        """Cycles and gate rejections of the incremental arm."""
        return f"{self.cycles} cycles, {self.rejected} rejected by the gate"
