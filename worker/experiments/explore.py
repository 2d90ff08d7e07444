"""Exploration policies over candidate items: epsilon-greedy, UCB1 and Beta-Thompson.

Each policy orders a slate from the model's logits and the items' impression/click counts
(kept in Redis by the worker). UCB and Thompson are *model-informed*: the model's click
probability is the prior mean, the counts sharpen it, and an item with few impressions gets
an exploration bonus or a wide posterior, so brand-new items get shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EpsilonGreedy", "Greedy", "Policy", "Thompson", "UCB1", "make_policy"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Greedy:
    """Highest model score first."""

    def order(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray) -> list[int]:
        """Indices of candidates in display order."""
        return list(np.argsort(-scores, kind="stable"))


@dataclass
class EpsilonGreedy:
    """Per slot, a random remaining candidate with probability ``epsilon``, else the best.

    The best is by model score; ``explored / slots`` is the observed exploration rate.
    """

    epsilon: float = 0.1
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    explored: int = 0
    slots: int = 0

    def order(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray) -> list[int]:
        """Indices in display order; counts explored slots in ``explored``/``slots``."""
        remaining = list(np.argsort(-scores, kind="stable"))
        out = []
        while remaining:
            self.slots += 1
            if self.rng.random() < self.epsilon:
                self.explored += 1
                out.append(remaining.pop(int(self.rng.integers(len(remaining)))))
            else:
                out.append(remaining.pop(0))
        return out


@dataclass
class UCB1:
    """Mean from the model, corrected by observed CTR, plus ``c * sqrt(2 ln N / (n + 1))``."""

    c: float = 1.0
    prior_strength: float = 20.0

    def order(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray) -> list[int]:
        """Indices by upper confidence bound."""
        prior = _sigmoid(scores)
        mean = (clicks + self.prior_strength * prior) / (imps + self.prior_strength)
        total = max(float(imps.sum()), 1.0)
        bonus = self.c * np.sqrt(2.0 * math.log(total + 1.0) / (imps + 1.0))
        return list(np.argsort(-(mean + bonus), kind="stable"))


@dataclass
class Thompson:
    """Sample ``Beta(a0 + clicks, b0 + non-clicks)`` per item, prior mean = model probability."""

    prior_strength: float = 20.0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def order(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray) -> list[int]:
        """Indices by a posterior draw."""
        prior = np.clip(_sigmoid(scores), 1e-3, 1 - 1e-3)
        a = self.prior_strength * prior + clicks
        b = self.prior_strength * (1 - prior) + np.maximum(imps - clicks, 0)
        return list(np.argsort(-self.rng.beta(a, b), kind="stable"))


Policy = Greedy | EpsilonGreedy | UCB1 | Thompson


def make_policy(name: str, seed: int = 0, epsilon: float = 0.1) -> Policy:
    """Build a policy by its config name: greedy | epsilon | ucb | thompson."""
    rng = np.random.default_rng(seed)
    if name == "greedy":
        return Greedy()
    if name == "epsilon":
        return EpsilonGreedy(epsilon, rng)
    if name == "ucb":
        return UCB1()
    if name == "thompson":
        return Thompson(rng=rng)
    raise ValueError(f"unknown policy {name!r}; choose from epsilon, greedy, thompson, ucb")
