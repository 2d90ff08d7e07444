"""Serving-side helpers: rank candidates for a user from an arm's published vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from worker.experiments.explore import Greedy, Policy
from worker.learning.user_tower import UserTower
from worker.serving.cache import VectorReader

__all__ = ["ItemStats", "Ranker", "UserTower"]


class ItemStats(Protocol):
    """Per-item impression and click counts (see :mod:`model_store.counters`)."""

    def item_stats(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) per id."""
        ...


class Ranker:
    """Scores candidates with one atomic lookup per request (history + candidates together).

    Items not yet in the arm's current version score as the mean of the others, so a
    brand-new item is neither buried nor promoted before its first publish.
    """

    def __init__(self, store: VectorReader, stats: ItemStats | None = None) -> None:
        self.store = store
        self.stats = stats
        self._towers: dict[tuple[str, str], UserTower] = {}

    def scores(self, user_recent_items: Sequence[str], candidates: Sequence[str], arm: str
               ) -> tuple[str | None, np.ndarray]:
        """(version, logit per candidate); NaN-free."""
        ids = list(user_recent_items) + list(candidates)
        version, vecs, found = self.store.lookup(arm, ids)
        if version is None or vecs.shape[1] == 0:
            return None, np.zeros(len(candidates), np.float32)
        tower = self._tower(arm, version, vecs.shape[1] - 1)
        n = len(user_recent_items)
        cand = vecs[n:]
        scores = cand @ tower.user_vector(vecs[:n], found[:n])
        known = found[len(user_recent_items):]
        fill = float(scores[known].mean()) if known.any() else 0.0
        return version, np.where(known, scores, fill).astype(np.float32)

    def rank(self, user_recent_items: Sequence[str], candidates: Sequence[str], arm: str,
             policy: Policy | None = None) -> tuple[str | None, list[str], np.ndarray]:
        """(version, candidates in display order, their scores) under ``policy`` (greedy)."""
        version, scores = self.scores(user_recent_items, candidates, arm)
        policy = policy or Greedy()
        if self.stats is not None and not isinstance(policy, Greedy):
            imps, clicks = self.stats.item_stats(candidates)
        else:
            imps = clicks = np.zeros(len(candidates))
        order = policy.order(scores, imps, clicks)
        return version, [candidates[k] for k in order], scores[order]

    def _tower(self, arm: str, version: str, dim: int) -> UserTower:
        key = (arm, version)
        if key not in self._towers:
            info = self.store.info(arm, version)
            if info is None or not info.user_prior:
                # retired meanwhile: the order-free tower with no prior
                return UserTower.mean(np.zeros(dim, np.float32))
            self._towers = {k: v for k, v in self._towers.items() if k[0] != arm}
            self._towers[key] = UserTower.from_bytes(info.user_prior, info.user_tower)
        return self._towers[key]
