"""Serving-side helpers: rank candidates for a user from an arm's published vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from worker.experiments.explore import Greedy, Policy
from worker.serving.cache import VectorReader

__all__ = ["ItemStats", "Ranker", "user_vector"]


class ItemStats(Protocol):
    """Per-item impression and click counts (see :mod:`model_store.counters`)."""

    def item_stats(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) per id."""
        ...


def user_vector(history: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``[u0 + mean(history w), 1]`` for published vectors laid out as ``[w, bias]``."""
    if len(history):
        pooled = np.nanmean(history[:, :-1], axis=0)
        pooled = np.nan_to_num(pooled)
    else:
        pooled = np.zeros(len(prior), np.float32)
    return np.concatenate([prior + pooled, [1.0]]).astype(np.float32)


class Ranker:
    """Scores candidates with one atomic lookup per request (history + candidates together).

    Items not yet in the arm's current version score as the mean of the others, so a
    brand-new item is neither buried nor promoted before its first publish.
    """

    def __init__(self, store: VectorReader, stats: ItemStats | None = None) -> None:
        self.store = store
        self.stats = stats
        self._priors: dict[tuple[str, str], np.ndarray] = {}

    def scores(self, user_recent_items: Sequence[str], candidates: Sequence[str], arm: str
               ) -> tuple[str | None, np.ndarray]:
        """(version, logit per candidate); NaN-free."""
        ids = list(user_recent_items) + list(candidates)
        version, vecs, found = self.store.lookup(arm, ids)
        if version is None or vecs.shape[1] == 0:
            return None, np.zeros(len(candidates), np.float32)
        prior = self._prior(arm, version, vecs.shape[1] - 1)
        hist = vecs[: len(user_recent_items)][found[: len(user_recent_items)]]
        cand = vecs[len(user_recent_items):]
        scores = cand @ user_vector(hist, prior)
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

    def _prior(self, arm: str, version: str, dim: int) -> np.ndarray:
        key = (arm, version)
        if key not in self._priors:
            info = self.store.info(arm, version)
            if info is None or not info.user_prior:
                return np.zeros(dim, np.float32)  # retired meanwhile: no prior to add
            self._priors = {k: v for k, v in self._priors.items() if k[0] != arm}
            self._priors[key] = np.frombuffer(info.user_prior, "<f4")
        return self._priors[key]
