"""Online experiment and drift monitoring: CTR per arm with statistics, and drift signals."""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from consumers.pipeline import BatchReport
from worker.config import DriftSettings, ExperimentSettings
from worker.drift import Adwin, LabelDrift, ScorePSI, embedding_drift
from worker.metrics import Metrics
from worker.stats import SequentialTest, compare, srm_p_value

__all__ = ["DriftMonitor", "ExperimentMonitor"]

OTHER = "other"  # metric label for arms stamped on events but not configured


class Counters(Protocol):
    """Where shared counters go (see :mod:`model_store.counters`)."""

    def apply(self, token: str, items: Mapping[tuple[str, str], int],
              arms: Mapping[tuple[str, str], int]) -> bool:
        """Apply deltas once per token."""
        ...


class ExperimentMonitor:
    """Counts impressions, clicks and requests per arm and tests treatments against control.

    Cumulative counts and the sequential tests' running minima are part of the checkpoint.
    Per-item and per-arm deltas go to shared counters exactly once (see :meth:`flush`).
    """

    def __init__(self, exp: ExperimentSettings, metrics: Metrics | None = None,
                 counters: Counters | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.exp = exp
        self.metrics = metrics
        self.counters = counters
        self.clock = clock
        self.arms = [a.name for a in exp.arms]
        self.totals: dict[str, Counter[str]] = {a: Counter() for a in self.arms}
        self.sequential = {a: SequentialTest(exp.sequential_tau) for a in self.arms
                           if a != exp.control}
        self._window: deque[tuple[float, Counter[tuple[str, str]]]] = deque()
        self.pending_items: Counter[tuple[str, str]] = Counter()
        self.pending_arms: Counter[tuple[str, str]] = Counter()
        self.worker_id = uuid.uuid4().hex
        self.flush_seq = 0

    def record(self, report: BatchReport) -> None:
        """Account for one ingestion batch."""
        if not report.arm_events:
            return
        for (arm, etype), n in report.arm_events.items():
            if arm in self.totals:
                self.totals[arm][etype] += n
            if self.metrics is not None:
                self.metrics.record_arm_event(self.exp.name, arm if arm in self.totals
                                              else OTHER, etype, n)
        self.pending_arms.update(report.arm_events)
        self.pending_items.update(report.item_events)
        now = self.clock()
        self._window.append((now, Counter(report.arm_events)))
        while self._window and now - self._window[0][0] > self.exp.ctr_window_s:
            self._window.popleft()

    def stats(self) -> dict[str, Any]:
        """CTR per arm (cumulative and windowed), lift and p-values vs control, SRM."""
        window: Counter[tuple[str, str]] = Counter()
        for _, counts in self._window:
            window.update(counts)
        control = self.totals[self.exp.control]
        arms: dict[str, Any] = {}
        for arm in self.arms:
            t = self.totals[arm]
            entry: dict[str, Any] = {
                "impressions": t["impression"], "clicks": t["click"], "requests": t["request"],
                "ctr": _ratio(t["click"], t["impression"]),
                "ctr_window": _ratio(window[(arm, "click")], window[(arm, "impression")]),
            }
            if arm != self.exp.control:
                res = compare(control["click"], control["impression"], t["click"],
                              t["impression"])
                entry["sequential_p"] = self.sequential[arm].update(
                    control["click"], control["impression"], t["click"], t["impression"])
                if res is not None:
                    entry.update(lift=res.lift, lift_low=res.lift_low, lift_high=res.lift_high,
                                 diff=res.diff, diff_low=res.diff_low, diff_high=res.diff_high,
                                 z=res.z, p_value=res.p_value)
            arms[arm] = entry
        requests = [self.totals[a]["request"] for a in self.arms]
        srm = srm_p_value(requests, [a.share for a in self.exp.arms])
        out = {"experiment": self.exp.name, "control": self.exp.control, "arms": arms,
               "srm_p_value": srm, "srm_alert": srm < self.exp.srm_p_value}
        if self.metrics is not None:
            self.metrics.record_experiment(out)
        return out

    def flush(self) -> bool:
        """Send pending deltas under this flush's token; True if applied now."""
        if self.counters is None or not (self.pending_items or self.pending_arms):
            return False
        applied = self.counters.apply(f"{self.worker_id}:{self.flush_seq}", self.pending_items,
                                      self.pending_arms)
        self.pending_items.clear()
        self.pending_arms.clear()
        self.flush_seq += 1
        return applied

    def state(self) -> dict[str, Any]:
        """Checkpoint state: totals, running minima, the unflushed deltas and their token."""
        return {
            "totals": {a: dict(c) for a, c in self.totals.items()},
            "sequential": {a: s.p_value for a, s in self.sequential.items()},
            "pending_items": [[i, t, n] for (i, t), n in self.pending_items.items()],
            "pending_arms": [[a, t, n] for (a, t), n in self.pending_arms.items()],
            "worker_id": self.worker_id, "flush_seq": self.flush_seq,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore, then re-send the restored deltas (skipped if they were applied)."""
        for arm, counts in state["totals"].items():
            if arm in self.totals:
                self.totals[arm] = Counter(counts)
        for arm, p in state["sequential"].items():
            if arm in self.sequential:
                self.sequential[arm].p_value = float(p)
        self.pending_items = Counter({(i, t): n for i, t, n in state["pending_items"]})
        self.pending_arms = Counter({(a, t): n for a, t, n in state["pending_arms"]})
        self.worker_id, self.flush_seq = state["worker_id"], int(state["flush_seq"])
        self.flush()


class DriftMonitor:
    """Feeds the drift detectors and exports their scores and alerts.

    Data drift (score PSI, loss ADWIN, label CTR) is measured on the reference lineage
    (default: the experiment's control) once it is frozen, on the traffic it served: its
    model no longer moves and no other arm's policy shapes that traffic, so the signals
    reflect the users and items, not our own learning. Embedding drift compares
    consecutive published versions of every lineage.
    """

    def __init__(self, cfg: DriftSettings, reference_arm: str,
                 metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.reference_arm = cfg.reference_arm or reference_arm
        self.metrics = metrics
        self.score_psi = ScorePSI(cfg.psi_window, cfg.psi_threshold)
        self.loss = Adwin(cfg.adwin_delta)
        self.label = LabelDrift(cfg.label_window, cfg.label_min_change, cfg.label_p_value)
        self._adwin_hold = 0
        self._boost_left = 0
        self._rng = np.random.default_rng(0)
        self._last_vectors: dict[str, tuple[list[str], np.ndarray]] = {}
        self.embedding: dict[str, tuple[float, float]] = {}
        self.history: list[dict[str, Any]] = []

    def observe_predictions(self, arm: str, probs: np.ndarray, labels: np.ndarray) -> None:
        """Progressive-validation output of one lineage for one cycle."""
        if arm != self.reference_arm or len(probs) == 0:
            return
        self.score_psi.update(probs)
        self.label.update(labels)
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
        # Within a cycle, positives arrive at click time and negatives when their window
        # closes; shuffle so ADWIN sees the cycle's losses without that artificial order.
        losses = self._rng.permutation(losses)
        worse = False
        for value in losses:
            # Only a rise in loss alerts: a falling loss is a change, not a problem.
            if self.loss.update(float(value)) and self.loss.last_change > 0:
                worse = True
        self._adwin_hold = self.cfg.hold_cycles if worse else max(0, self._adwin_hold - 1)

    def observe_publish(self, arm: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Compare a newly published version with the arm's previous one."""
        prev = self._last_vectors.get(arm)
        if prev is not None:
            self.embedding[arm] = embedding_drift(prev[0], prev[1], ids, vectors,
                                                  self.cfg.embedding_moved_cosine)
        self._last_vectors[arm] = (list(ids), np.array(vectors, copy=True))

    def alerts(self) -> dict[str, bool]:
        """Current alert flag per data-drift signal."""
        return {"score_psi": self.score_psi.alert, "loss_adwin": self._adwin_hold > 0,
                "label_ctr": self.label.alert}

    def recent_share(self, default: float) -> float:
        """Replay mix for the next cycle: boosted towards recent data while drift alerts."""
        if any(self.alerts().values()):
            if self._boost_left == 0 and self.metrics is not None:
                self.metrics.drift_responses.inc()
            self._boost_left = self.cfg.boost_cycles
        if self._boost_left > 0:
            self._boost_left -= 1
            return self.cfg.boost_recent_share
        return default

    def export(self) -> dict[str, Any]:
        """Scores and alerts (also set on the metrics); appended to :attr:`history`."""
        alerts = self.alerts()
        snap: dict[str, Any] = {
            "reference_arm": self.reference_arm,
            "score_psi": {"score": self.score_psi.score, "alert": alerts["score_psi"]},
            "loss_adwin": {"score": self.loss.score, "alert": alerts["loss_adwin"],
                           "detections": self.loss.detections,
                           "last_change": self.loss.last_change},
            "label_ctr": {"score": self.label.score, "alert": alerts["label_ctr"]},
            "embedding": {arm: {"mean_cosine_shift": s, "moved_share": m,
                                "alert": m > self.cfg.embedding_alert_share}
                          for arm, (s, m) in self.embedding.items()},
        }
        if self.metrics is not None:
            self.metrics.record_drift(snap)
        self.history.append(snap)
        del self.history[:-1000]
        return snap


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None
