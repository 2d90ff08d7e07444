"""Exploration policies over candidate items: epsilon-greedy, UCB1 and Beta-Thompson.

Each policy orders a slate from the model's logits and the items' impression/click counts
(kept in Redis by the worker), and with :meth:`choose` also says how likely each shown item
was to be put in its slot: the *propensity* an app stamps on the impression, which the
experiment's analysis and any off-policy evaluation (IPS) need.

Propensities are per-slot conditional probabilities: for slot ``j``, the probability that
the policy puts this item there given the items already placed in slots ``0..j-1``. Their
product over a slate is the slate's probability.

UCB and Thompson are *model-informed*: the model's click probability is the prior mean, the
counts sharpen it, and an item with few impressions gets an exploration bonus or a wide
posterior, so brand-new items get shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EpsilonGreedy", "Greedy", "Policy", "Thompson", "UCB1", "make_policy"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _deterministic(order: list[int], k: int) -> tuple[list[int], np.ndarray]:
    return order[:k], np.ones(min(k, len(order)))


@dataclass
class Greedy:
    """Highest model score first."""

    def order(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray) -> list[int]:
        """Indices of candidates in display order."""
        return list(np.argsort(-scores, kind="stable"))

    def choose(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray, k: int
               ) -> tuple[list[int], np.ndarray]:
        """The first ``k`` in display order and their propensities (all 1: deterministic)."""
        return _deterministic(self.order(scores, imps, clicks), k)


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

    def choose(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray, k: int
               ) -> tuple[list[int], np.ndarray]:
        """First ``k`` in display order; slot ``j``'s propensity is exact.

        With ``m`` candidates left, the best of them lands in the slot with probability
        ``1 - epsilon + epsilon / m`` and any other with ``epsilon / m``.
        """
        remaining = list(np.argsort(-scores, kind="stable"))
        order: list[int] = []
        props = np.empty(min(k, len(remaining)))
        for j in range(len(props)):
            m = len(remaining)
            self.slots += 1
            if self.rng.random() < self.epsilon:
                self.explored += 1
                pick = int(self.rng.integers(m))
            else:
                pick = 0
            props[j] = self.epsilon / m + (1.0 - self.epsilon) * (pick == 0)
            order.append(int(remaining.pop(pick)))
        return order, props


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

    def choose(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray, k: int
               ) -> tuple[list[int], np.ndarray]:
        """The first ``k`` by upper bound; propensities 1 (deterministic given the counts)."""
        return _deterministic(self.order(scores, imps, clicks), k)


@dataclass
class Thompson:
    """Sample ``Beta(a0 + clicks, b0 + non-clicks)`` per item, prior mean = model probability."""

    prior_strength: float = 20.0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    #: posterior draws behind each propensity estimate (the one that ranked included)
    propensity_draws: int = 32

    def _posterior(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        prior = np.clip(_sigmoid(scores), 1e-3, 1 - 1e-3)
        a = self.prior_strength * prior + clicks
        b = self.prior_strength * (1 - prior) + np.maximum(imps - clicks, 0)
        return a, b

    def order(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray) -> list[int]:
        """Indices by a posterior draw."""
        a, b = self._posterior(scores, imps, clicks)
        return list(np.argsort(-self.rng.beta(a, b), kind="stable"))

    def choose(self, scores: np.ndarray, imps: np.ndarray, clicks: np.ndarray, k: int
               ) -> tuple[list[int], np.ndarray]:
        """First ``k`` by one posterior draw; propensities estimated by Monte Carlo.

        Slot ``j``'s propensity is the share of ``propensity_draws`` posterior draws (the
        one that ranked among them, so never 0) in which the shown item beats every
        candidate not yet placed: an unbiased estimate with resolution 1/draws.
        """
        a, b = self._posterior(scores, imps, clicks)
        draws = self.rng.beta(a, b, size=(max(self.propensity_draws, 1), len(scores)))
        order = list(np.argsort(-draws[0], kind="stable"))[:k]
        props = np.empty(len(order))
        for j, item in enumerate(order):
            props[j] = float(np.mean(np.argmax(draws, axis=1) == item))
            draws[:, item] = -np.inf
        return order, props


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
