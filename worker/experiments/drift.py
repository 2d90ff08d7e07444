"""Drift detectors: score PSI, embedding drift between versions, ADWIN on loss, label drift.

Each detector exposes ``score`` (a number for dashboards) and ``alert`` (a flag for
alerting), with thresholds as constructor arguments (set from config).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from worker.experiments.stats import compare

__all__ = ["Adwin", "LabelDrift", "ScorePSI", "cosine_shift", "psi"]


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``.

    Bin edges are the reference's deciles (fixed by the reference, so the index compares
    like with like); empty bins get a small floor so the log stays finite.
    """
    if len(reference) < bins or len(current) == 0:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    ref_p = np.maximum(ref / ref.sum(), 1e-4)
    cur_p = np.maximum(cur / cur.sum(), 1e-4)
    return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))


class ScorePSI:
    """PSI of served scores: a fixed reference window against a rolling current window.

    The first ``window`` scores are the reference; then the latest ``window`` scores are
    compared with it. < 0.1 no drift, 0.1-0.25 moderate, > ``threshold`` (0.25) major: ``alert``.
    """

    def __init__(self, window: int = 5000, threshold: float = 0.25) -> None:
        self.window, self.threshold = window, threshold
        self.reference: np.ndarray | None = None
        self._ref_parts: list[np.ndarray] = []
        self._current: deque[np.ndarray] = deque()
        self._current_n = 0
        self.score = 0.0

    @property
    def alert(self) -> bool:
        """True while the score is above the threshold."""
        return self.score > self.threshold

    def update(self, scores: np.ndarray) -> float:
        """Add a batch of scores; returns the PSI (0 until the reference is full)."""
        if self.reference is None:
            self._ref_parts.append(np.asarray(scores, float))
            if sum(len(p) for p in self._ref_parts) >= self.window:
                self.reference = np.concatenate(self._ref_parts)[: self.window]
                self._ref_parts = []
            return self.score
        self._current.append(np.asarray(scores, float))
        self._current_n += len(scores)
        while self._current_n - len(self._current[0]) >= self.window:
            self._current_n -= len(self._current.popleft())
        if self._current_n >= self.window // 2:
            self.score = psi(self.reference, np.concatenate(self._current))
        return self.score


def cosine_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` of each row pair; 0 for a row that did not change, even a zero one.

    A zero vector (an item no model has learnt yet) has an undefined cosine: unchanged, it
    has not moved, so it counts as cosine 1, not 0:

    >>> z = np.zeros((2, 3))
    >>> cosine_shift(z, z).tolist()
    [0.0, 0.0]
    """
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(norm_a * norm_b, 1e-12)
    cos[np.all(a == b, axis=1)] = 1.0
    return np.asarray(1 - cos)


class Adwin:
    """ADWIN change detector (Bifet & Gavaldà, 2007) on a bounded window.

    Keeps the recent values; every ``clock`` values it looks for a split of the window into
    an older and a newer part whose means differ by more than the Hoeffding-style bound
    ``eps_cut`` at confidence ``delta``; if found, the older part is dropped and a change
    is flagged. ``delta=0.002`` as in River.
    """

    def __init__(self, delta: float = 0.002, max_window: int = 5000, clock: int = 32,
                 min_part: int = 100) -> None:
        self.delta, self.max_window, self.clock, self.min_part = delta, max_window, clock, min_part
        self.values: deque[float] = deque(maxlen=max_window)
        self.detections = 0
        self.drift = False
        self.score = 0.0  # largest |mean_old - mean_new| / eps_cut seen at the last check
        self.last_change = 0.0  # mean_new - mean_old at the last detection
        self._since = 0

    def update(self, value: float) -> bool:
        """Add one value; True if a change was detected at this value."""
        self.values.append(value)
        self._since += 1
        self.drift = False
        if self._since >= self.clock:
            self._since = 0
            self.drift = self._check()
        return self.drift

    def _check(self) -> bool:
        x = np.fromiter(self.values, float)
        n = len(x)
        if n < 2 * self.min_part:
            return False
        cum = np.cumsum(x)
        splits = np.arange(self.min_part, n - self.min_part + 1, max(1, self.clock // 2))
        n0 = splits.astype(float)
        n1 = n - n0
        mu0 = cum[splits - 1] / n0
        mu1 = (cum[-1] - cum[splits - 1]) / n1
        var = float(np.var(x))
        m = 1.0 / (1.0 / n0 + 1.0 / n1)
        d = math.log(2.0 * math.log(n) / self.delta)
        eps = np.sqrt(2.0 / m * var * d) + 2.0 / (3.0 * m) * d
        ratio = np.abs(mu0 - mu1) / eps
        self.score = float(ratio.max())
        hits = np.nonzero(ratio > 1.0)[0]
        if len(hits) == 0:
            return False
        cut = int(splits[hits[-1]])
        self.last_change = float(mu1[hits[-1]] - mu0[hits[-1]])
        for _ in range(cut):
            self.values.popleft()
        self.detections += 1
        return True


class LabelDrift:
    """CTR shift: the rolling window's positive rate against the reference window's.

    ``score`` is the relative change; ``alert`` when it is both larger than ``min_change``
    and significant at ``p_value`` (two-proportion z-test).
    """

    def __init__(self, window: int = 5000, min_change: float = 0.1,
                 p_value: float = 0.001) -> None:
        self.window, self.min_change, self.p_threshold = window, min_change, p_value
        self.reference: tuple[int, int] | None = None
        self._ref = [0, 0]
        self._recent: deque[tuple[int, int]] = deque()
        self._n = self._pos = 0
        self.score = 0.0
        self.alert = False

    def update(self, labels: np.ndarray) -> float:
        """Add a batch of 0/1 labels; returns the relative CTR change."""
        n, pos = len(labels), int(np.sum(labels))
        if self.reference is None:
            self._ref[0] += n
            self._ref[1] += pos
            if self._ref[0] >= self.window:
                self.reference = (self._ref[0], self._ref[1])
            return 0.0
        self._recent.append((n, pos))
        self._n += n
        self._pos += pos
        while self._n - self._recent[0][0] >= self.window:
            old_n, old_pos = self._recent.popleft()
            self._n -= old_n
            self._pos -= old_pos
        ref_n, ref_pos = self.reference
        if self._n >= self.window // 2 and ref_pos > 0:
            result = compare(ref_pos, ref_n, self._pos, self._n)
            if result is not None:
                self.score = abs(result.lift)
                self.alert = self.score > self.min_change and result.p_value < self.p_threshold
        return self.score
