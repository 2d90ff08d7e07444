"""Drift detection fed by training cycles: score PSI, loss ADWIN, label CTR, embedding shift."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from worker.config import DriftSettings
from worker.experiments.drift import Adwin, LabelDrift, ScorePSI, cosine_shift

__all__ = ["DriftMonitor"]

_MAX_PENDING = 200_000  # reference samples held back for their labels, at most


class DriftMonitor:
    """Feeds the drift detectors and exports their scores and alerts.

    Data drift (score PSI, loss ADWIN, label CTR) is measured on the reference lineage
    (default: the experiment's control) once it is frozen, on the traffic it served: its
    model no longer moves and no other arm's policy shapes that traffic, so the signals
    reflect the users and items, not our own learning. Embedding drift compares
    consecutive published versions of every lineage.
    """

    def __init__(self, cfg: DriftSettings, reference_arm: str,
                 on_response: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.reference_arm = cfg.reference_arm or reference_arm
        self.start_after_cycles = cfg.start_after_cycles
        self.on_response = on_response  # called when an alert boosts the replay mix
        self.score_psi = ScorePSI(cfg.psi_window, cfg.psi_threshold)
        self.loss = Adwin(cfg.adwin_delta)
        self.label = LabelDrift(cfg.label_window, cfg.label_min_change, cfg.label_p_value)
        self._adwin_hold = 0
        self._boost_left = 0
        self._rng = np.random.default_rng(0)
        # Each arm's last published vectors: id -> row, and the rows (grown by deltas).
        self._last_vectors: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        self.embedding: dict[str, tuple[float, float]] = {}
        self._moved_streak: dict[str, int] = {}  # versions in a row over the moved share
        self.seen = 0  # reference samples offered so far (the first start_after_samples skipped)
        self._settle_until = cfg.start_after_samples
        # Event-time release (see observe_predictions): labels are final up to _final_ts.
        self._final_ts = -(2**62)
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            np.zeros(0, np.int64), np.zeros(0), np.zeros(0))

    @property
    def settled(self) -> bool:
        """Whether the settle budget (``start_after_samples``) is spent."""
        return self.seen >= self._settle_until

    def settle_for(self, samples: int | None) -> None:
        """Skip the next ``samples`` reference samples from now (None: hold until told).

        For a caller that knows when a transient ends, e.g. the demo once it has drained
        the pre-warm backlog: the detectors then take their reference after it.
        """
        self._settle_until = 2**62 if samples is None else self.seen + samples

    def observe_predictions(self, arm: str, probs: np.ndarray, labels: np.ndarray,
                            ts: np.ndarray | None = None) -> None:
        """Progressive-validation output of one lineage for one cycle.

        ``ts`` (impression times) puts the detectors on event time: a cycle's samples are
        whatever the join closed meanwhile, positives at click time and negatives in bursts
        whenever the watermark moves, so in arrival order the label mix swings from cycle
        to cycle on a perfectly stationary stream (ADWIN took that for drift). Samples
        wait until every label up to their time is final (a negative at time T is emitted
        only once the watermark has closed every impression up to T), then go to the
        detectors in time order. Without ``ts``: arrival order.
        """
        if arm != self.reference_arm or len(probs) == 0:
            return
        if ts is not None:
            probs, labels = self._release(probs, labels, ts)
            if len(probs) == 0:
                return
        settled = self.settled  # the batch that spends the budget is still skipped
        self.seen += len(probs)
        if not settled:
            return
        self.score_psi.update(probs)
        self.label.update(labels)
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
        # A released span's internal order carries no time information worth keeping (one
        # request's slate shares a time); shuffled, ADWIN sees no clusters in it.
        losses = self._rng.permutation(losses)
        worse = False
        for value in losses:
            # Only a rise in loss alerts: a falling loss is a change, not a problem.
            if self.loss.update(float(value)) and self.loss.last_change > 0:
                worse = True
        self._adwin_hold = self.cfg.hold_cycles if worse else max(0, self._adwin_hold - 1)

    def _release(self, probs: np.ndarray, labels: np.ndarray, ts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Samples whose time every label has reached, oldest first; the rest wait."""
        negatives = ts[labels == 0]
        if len(negatives):
            self._final_ts = max(self._final_ts, int(negatives.max()))
        pts = np.concatenate([self._pending[0], ts.astype(np.int64)])
        pp = np.concatenate([self._pending[1], probs.astype(np.float64)])
        py = np.concatenate([self._pending[2], labels.astype(np.float64)])
        order = np.argsort(pts, kind="stable")
        pts, pp, py = pts[order], pp[order], py[order]
        cut = int(np.searchsorted(pts, self._final_ts, side="right"))
        cut = max(cut, len(pts) - _MAX_PENDING)  # bounded, even with no negatives at all
        self._pending = (pts[cut:], pp[cut:], py[cut:])
        return pp[:cut], py[:cut]

    def observe_publish(self, arm: str, ids: Sequence[str], vectors: np.ndarray,
                        delta: bool = False) -> None:
        """Compare a newly published version with the arm's previous one.

        ``delta``: ``ids`` are only the rows that changed (a delta version); every other
        item kept its vector, so it counts as not moved. The shares are over the items
        the previous version had, either way.
        """
        vectors = np.asarray(vectors, np.float32)
        prev = self._last_vectors.get(arm)
        if prev is None or not delta:
            index, mat = {i: k for k, i in enumerate(ids)}, np.array(vectors, copy=True)
        else:
            index, mat = prev
        if prev is not None:
            old_index, old_mat = prev
            pairs = [(k, old_index[i]) for k, i in enumerate(ids) if i in old_index]
            shift = np.zeros(0)
            if pairs:
                new_k, old_k = (np.array(x) for x in zip(*pairs, strict=True))
                shift = cosine_shift(old_mat[old_k], vectors[new_k])
            moved = float(np.sum(shift > 1 - self.cfg.embedding_moved_cosine))
            base = len(old_index) if delta else len(pairs)
            self.embedding[arm] = ((float(shift.sum()) / base, moved / base) if base
                                   else (0.0, 0.0))
            over = self.embedding[arm][1] > self.cfg.embedding_alert_share
            self._moved_streak[arm] = self._moved_streak.get(arm, 0) + 1 if over else 0
        if prev is not None and delta:
            new = [i for i in ids if i not in index]
            if new:
                first = len(index)
                index.update((i, first + k) for k, i in enumerate(new))
                mat = np.concatenate([mat, np.zeros((len(new), mat.shape[1]), np.float32)])
            mat[[index[i] for i in ids]] = vectors
        self._last_vectors[arm] = (index, mat)

    def alerts(self) -> dict[str, bool]:
        """Current alert flag per data-drift signal."""
        return {"score_psi": self.score_psi.alert, "loss_adwin": self._adwin_hold > 0,
                "label_ctr": self.label.alert}

    def next_recent_share(self, default: float | None) -> float | None:
        """Replay mix for the next cycle: boosted towards recent data while drift alerts.

        A write: it consumes one boosted cycle (reported through ``on_response``), and
        (re)starts a boost of ``boost_cycles`` while a data-drift alert is up.
        """
        if any(self.alerts().values()):
            self._boost_left = self.cfg.boost_cycles
        if self._boost_left > 0:
            self._boost_left -= 1
            if self.on_response is not None:
                self.on_response()
            return self.cfg.boost_recent_share
        return default

    def snapshot(self) -> dict[str, Any]:
        """Scores and alerts now (a read: calling it changes nothing)."""
        alerts = self.alerts()
        snap: dict[str, Any] = {
            "reference_arm": self.reference_arm,
            "score_psi": {"score": self.score_psi.score, "alert": alerts["score_psi"]},
            "loss_adwin": {"score": self.loss.score, "alert": alerts["loss_adwin"],
                           "detections": self.loss.detections,
                           "last_change": self.loss.last_change},
            "label_ctr": {"score": self.label.score, "alert": alerts["label_ctr"]},
            "embedding": {arm: {"mean_cosine_shift": s, "moved_share": m,
                                "alert": self.settled and self._moved_streak.get(arm, 0)
                                >= self.cfg.embedding_alert_versions}
                          for arm, (s, m) in self.embedding.items()},
        }
        return snap
