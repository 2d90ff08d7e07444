"""Off-policy estimators: the CTR a candidate policy would get, from logs of another one.

Slates are evaluated slot by slot under the **cascade assumption**: a click in slot ``j``
depends on the user and the items in slots ``0..j`` only (users scan from the top). The
logged propensity of slot ``j`` is the behaviour policy's probability of putting that item
there given the items above it (what :mod:`worker.experiments.explore` stamps), so the
importance weight of slot ``j`` is the product over slots ``0..j`` of target over logged
probabilities, and

- **IPS** averages ``w_j r_j``: unbiased wherever the logging policy could show what the
  target would (overlap), with a variance that grows with the weights;
- **SNIPS** divides by the mean weight instead of 1: slightly biased, far less variable;
- **DR** (cascade doubly robust, Kiyohara et al., WSDM 2022) adds a direct method, the
  model's own click probability ``r_hat``: per slot
  ``w_j (r_j - r_hat_j) + w_{j-1} E_target[r_hat]``. Unbiased if either the weights or the
  model are right, and with less variance than IPS when the model is any good.

The estimand is the target policy's CTR: clicks per impression over slates of the logged
length. Intervals are normal (CLT over independent decisions); SNIPS's by the delta method.
The effective sample size ``(sum w)^2 / sum w^2`` says how many logged decisions the
estimate is worth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worker.experiments.explore import UCB1, _sigmoid
from worker.experiments.stats import _normal_quantile

__all__ = ["Estimate", "SlotLog", "estimate", "slot_probabilities"]

#: Target policies :func:`slot_probabilities` knows: those serving offers.
POLICIES = ("greedy", "epsilon", "ucb", "thompson")


@dataclass
class SlotLog:
    """Per-decision, per-slot arrays (decisions x slots), NaN-free.

    ``target_prob[n, j]``: the target policy's probability of the logged item in slot
    ``j`` given the logged items above it; ``logged_prob``: the logged propensity of the
    same; ``reward``: 1 if it was clicked; ``r_hat``: the model's click probability of the
    logged item; ``dm``: the expected ``r_hat`` of the target's own choice for slot ``j``
    given the logged items above it.
    """

    target_prob: np.ndarray
    logged_prob: np.ndarray
    reward: np.ndarray
    r_hat: np.ndarray
    dm: np.ndarray


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its confidence interval."""

    value: float
    low: float
    high: float
    se: float


def _mean_ci(per_decision: np.ndarray, zq: float) -> Estimate:
    n = len(per_decision)
    mean = float(per_decision.mean())
    se = float(per_decision.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(mean, mean - zq * se, mean + zq * se, se)


def estimate(log: SlotLog, confidence: float = 0.95) -> dict[str, object]:
    """IPS, SNIPS and DR estimates of the target policy's CTR, and the effective sample size.

    Raises:
        ValueError: no decisions, or a logged propensity outside (0, 1].
    """
    if log.reward.size == 0:
        raise ValueError("no logged decisions to evaluate")
    if np.any(log.logged_prob <= 0) or np.any(log.logged_prob > 1):
        raise ValueError("logged propensities must be in (0, 1]")
    zq = _normal_quantile(0.5 + confidence / 2)
    slots = log.reward.shape[1]
    w = np.cumprod(log.target_prob / log.logged_prob, axis=1)  # cascade weights
    w_prev = np.concatenate([np.ones((w.shape[0], 1)), w[:, :-1]], axis=1)
    ips_n = (w * log.reward).sum(axis=1) / slots
    dr_n = (w * (log.reward - log.r_hat) + w_prev * log.dm).sum(axis=1) / slots
    dm_n = log.dm.sum(axis=1) / slots  # the direct method alone (biased by position)
    b_n = w.sum(axis=1) / slots
    n = len(b_n)
    snips = float(ips_n.sum() / b_n.sum()) if b_n.sum() > 0 else float("nan")
    resid = ips_n - snips * b_n
    se_snips = (float(resid.std(ddof=1) / (math.sqrt(n) * b_n.mean()))
                if n > 1 and b_n.mean() > 0 else math.inf)
    ess = float(b_n.sum() ** 2 / (b_n**2).sum()) if (b_n**2).sum() > 0 else 0.0
    return {
        "ips": _mean_ci(ips_n, zq),
        "snips": Estimate(snips, snips - zq * se_snips, snips + zq * se_snips, se_snips),
        "dr": _mean_ci(dr_n, zq),
        "dm": _mean_ci(dm_n, zq),
        "logged_ctr": _mean_ci(log.reward.mean(axis=1), zq),
        "decisions": n,
        "effective_sample_size": ess,
        "max_weight": float(w.max()) if w.size else 0.0,
    }


def slot_probabilities(policy: str, scores: np.ndarray, logged: list[int], *,
                       epsilon: float = 0.1, imps: np.ndarray | None = None,
                       clicks: np.ndarray | None = None,
                       rng: np.random.Generator | None = None, draws: int = 256
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the target policy does on one logged request, slot by slot.

    Args:
        policy: greedy | epsilon | ucb | thompson, as :mod:`worker.experiments.explore`
            implements them (same priors, same bonus).
        scores: the target model's logit per candidate.
        logged: the candidate index shown in each logged slot, top first.
        epsilon: the exploration rate of policy ``epsilon``.
        imps: per-candidate impressions for UCB and Thompson (zeros when None).
        clicks: per-candidate clicks, likewise.
        rng: Thompson's posterior draws (seeded: the same log gives the same estimate).
        draws: posterior draws behind Thompson's probabilities.

    Returns:
        ``(target_prob, r_hat, dm)`` per logged slot: the target's probability of the
        logged item given the logged items above it, the model's click probability of the
        logged item, and the model's expected click probability of the target's own choice
        for that slot (the direct method).
    """
    m = len(scores)
    imps = np.zeros(m) if imps is None else np.asarray(imps, float)
    clicks = np.zeros(m) if clicks is None else np.asarray(clicks, float)
    r_hat_all = _sigmoid(np.asarray(scores, float))
    remaining = np.ones(m, bool)
    k = len(logged)
    target, dm = np.empty(k), np.empty(k)
    if policy == "thompson":
        prior = np.clip(r_hat_all, 1e-3, 1 - 1e-3)
        a = 20.0 * prior + clicks
        b = 20.0 * (1 - prior) + np.maximum(imps - clicks, 0)
        sample = (rng or np.random.default_rng(0)).beta(a, b, size=(draws, m))
    rank_by = scores
    if policy == "ucb":
        rank_by = np.asarray(UCB1().order(scores, imps, clicks))
        rank_by = -np.argsort(rank_by).astype(float)  # position in UCB order, best highest
    for j, item in enumerate(logged):
        left = np.flatnonzero(remaining)
        if policy == "thompson":
            wins = np.bincount(left[np.argmax(sample[:, left], axis=1)], minlength=m) / draws
            target[j], dm[j] = wins[item], float(wins @ r_hat_all)
        else:
            best = int(left[np.argmax(np.asarray(rank_by)[left])])
            greedy_p = 1.0 if item == best else 0.0
            if policy == "epsilon":
                target[j] = (1 - epsilon) * greedy_p + epsilon / len(left)
                dm[j] = (1 - epsilon) * r_hat_all[best] + epsilon * r_hat_all[left].mean()
            elif policy in ("greedy", "ucb"):
                target[j], dm[j] = greedy_p, r_hat_all[best]
            else:
                raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        remaining[item] = False
    return target, r_hat_all[logged], dm
