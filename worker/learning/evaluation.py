"""Offline-quality numbers used by progressive validation and the gate: AUC and log-loss."""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "logloss"]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve with ties averaged; NaN when one class is missing.

    >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    labels = np.asarray(labels, bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), float)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; NaN on empty input."""
    if len(labels) == 0:
        return float("nan")
    p = np.clip(np.asarray(probs, float), eps, 1 - eps)
    y = np.asarray(labels, float)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
