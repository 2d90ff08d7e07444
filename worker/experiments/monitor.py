"""Online experiment accounting: counts per arm, sequential tests, exactly-once shared counters."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from consumers.pipeline import BatchReport
from worker.config import ExperimentSettings
from worker.experiments.group_sequential import GroupSequentialTest
from worker.experiments.stats import SequentialTest, compare_ratio
from worker.experiments.summary import summarize, user_ratio

__all__ = ["OTHER", "ExperimentMonitor", "fold_arm"]

log = logging.getLogger(__name__)

OTHER = "other"  # the label of arms stamped on events but not configured


def fold_arm(arm: str, configured: frozenset[str] | set[str]) -> str:
    """The arm itself if configured, else :data:`OTHER`: event content never adds labels.

    >>> fold_arm("fresh", {"fresh", "control"}), fold_arm("made-up", {"fresh"})
    ('fresh', 'other')
    """
    return arm if arm in configured else OTHER


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
    Arms not configured are counted under :data:`OTHER`, in memory and in Redis alike.
    """

    def __init__(self, exp: ExperimentSettings, counters: Counters | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.exp = exp
        self.counters = counters
        self.clock = clock
        self.arms = frozenset(a.name for a in exp.arms)
        self.totals: dict[str, Counter[str]] = {a.name: Counter() for a in exp.arms}
        self.sequential = {a.name: SequentialTest(exp.sequential_tau, exp.sequential_mde,
                                                  exp.sequential_burn_in)
                           for a in exp.arms if a.name != exp.control}
        #: the same always-valid test on the user-level (bucketed, delta-method) CTR
        self.user_sequential = {a: SequentialTest(exp.sequential_tau, exp.sequential_mde,
                                                  exp.sequential_burn_in)
                                for a in self.sequential}
        #: alpha spent over ``planned_impressions`` (calibrated, not always valid)
        self.user_gst = ({a: GroupSequentialTest(0.05) for a in self.sequential}
                         if exp.planned_impressions else {})
        self._window: deque[tuple[float, Counter[tuple[str, str]]]] = deque()
        self.pending_items: Counter[tuple[str, str]] = Counter()
        self.pending_arms: Counter[tuple[str, str]] = Counter()
        #: deltas handed to the counters under a token whose fate is unknown (outage):
        #: re-sent with the same token until acknowledged, so they apply exactly once
        self.inflight: tuple[str, Counter[tuple[str, str]], Counter[tuple[str, str]]] | None = None
        self.worker_id = uuid.uuid4().hex
        self.flush_seq = 0

    def record(self, report: BatchReport) -> None:
        """Account for one ingestion batch."""
        if not report.arm_events:
            return
        folded: Counter[tuple[str, str]] = Counter()
        for (arm, etype), n in report.arm_events.items():
            folded[(fold_arm(arm, self.arms), etype)] += n
        for (arm, etype), n in folded.items():
            if arm in self.totals:
                self.totals[arm][etype] += n
        self.pending_arms.update(folded)
        self.pending_items.update(report.item_events)
        now = self.clock()
        self._window.append((now, Counter({k: n for k, n in folded.items() if "@" not in k[1]})))
        self._trim(now)

    def update(self) -> None:
        """Take one look for the sequential tests (moves their running minima); a write."""
        control = self.totals[self.exp.control]
        b = self.exp.user_buckets
        c_user = user_ratio(control, "click", b)
        for arm, test in self.sequential.items():
            t = self.totals[arm]
            test.update(control["click"], control["impression"], t["click"], t["impression"])
            t_user = user_ratio(t, "click", b)
            self.user_sequential[arm].update_ratio(c_user, t_user)
            gst = self.user_gst.get(arm)
            if gst is not None and c_user is not None and t_user is not None:
                res = compare_ratio(c_user, t_user)
                if res is not None and self.exp.planned_impressions:
                    gst.look(res.z, (c_user.denominator + t_user.denominator)
                             / self.exp.planned_impressions)

    def snapshot(self) -> dict[str, Any]:
        """CTR per arm (cumulative and windowed), lift and p-values vs control, SRM; a read."""
        self._trim(self.clock())
        window: dict[str, Counter[str]] = {a: Counter() for a in self.totals}
        for _, counts in self._window:
            for (arm, etype), n in counts.items():
                if arm in window:
                    window[arm][etype] += n
        return summarize(self.exp, self.totals, window=window,
                         sequential_p={a: t.p_value for a, t in self.sequential.items()},
                         user_sequential_p={a: t.p_value
                                            for a, t in self.user_sequential.items()},
                         group_sequential={a: {"significant": g.rejected,
                                               "information": g.t, "z_bound": g.z_bound}
                                           for a, g in self.user_gst.items()})

    def _trim(self, now: float) -> None:
        while self._window and now - self._window[0][0] > self.exp.ctr_window_s:
            self._window.popleft()

    def unflushed(self) -> bool:
        """Whether deltas wait to be sent (in flight after an outage, or pending)."""
        return self.inflight is not None or bool(self.pending_items or self.pending_arms)

    def flush(self) -> bool:
        """Send deltas under their token; True if everything was acknowledged.

        Call only after a checkpoint that holds :meth:`state`. If the counters are
        unreachable, the deltas stay in flight under the same token and are re-sent by the
        next flush (the token makes a repeat a no-op); deltas recorded meanwhile wait for a
        token of their own, so nothing is applied twice or lost.
        """
        if self.counters is None:
            return False
        if self.inflight is None and (self.pending_items or self.pending_arms):
            self.inflight = (f"{self.worker_id}:{self.flush_seq}", self.pending_items,
                             self.pending_arms)
            self.pending_items, self.pending_arms = Counter(), Counter()
            self.flush_seq += 1
        if self.inflight is None:
            return True
        token, items, arms = self.inflight
        try:
            self.counters.apply(token, items, arms)
        except ConnectionError as exc:  # model_store.base.StoreUnavailable
            log.warning("experiment counters not flushed (will retry): %s", exc)
            return False
        self.inflight = None
        return True

    def state(self) -> dict[str, Any]:
        """Checkpoint state: totals, running minima, the unflushed deltas and their token."""
        return {
            "totals": {a: dict(c) for a, c in self.totals.items()},
            "sequential": {a: s.p_value for a, s in self.sequential.items()},
            "sequential_tau": {a: s.tau for a, s in self.sequential.items()},
            "user_sequential": {a: [s.p_value, s.tau] for a, s in self.user_sequential.items()},
            "user_gst": {a: g.state() for a, g in self.user_gst.items()},
            "pending_items": [[i, t, n] for (i, t), n in self.pending_items.items()],
            "pending_arms": [[a, t, n] for (a, t), n in self.pending_arms.items()],
            "inflight": None if self.inflight is None else [
                self.inflight[0], [[i, t, n] for (i, t), n in self.inflight[1].items()],
                [[a, t, n] for (a, t), n in self.inflight[2].items()]],
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
        for arm, tau in state.get("sequential_tau", {}).items():
            if arm in self.sequential and tau is not None and self.exp.sequential_tau is None:
                self.sequential[arm].tau = float(tau)  # fixed at burn-in: keep it
        for arm, (p, tau) in state.get("user_sequential", {}).items():
            if arm in self.user_sequential:
                self.user_sequential[arm].p_value = float(p)
                if tau is not None and self.exp.sequential_tau is None:
                    self.user_sequential[arm].tau = float(tau)
        for arm, gst_state in state.get("user_gst", {}).items():
            if arm in self.user_gst:
                self.user_gst[arm].load(gst_state)
        self.pending_items = Counter({(i, t): n for i, t, n in state["pending_items"]})
        self.pending_arms = Counter({(fold_arm(a, self.arms), t): n
                                     for a, t, n in state["pending_arms"]})
        inflight = state.get("inflight")
        self.inflight = None if inflight is None else (
            inflight[0], Counter({(i, t): n for i, t, n in inflight[1]}),
            Counter({(a, t): n for a, t, n in inflight[2]}))
        self.worker_id, self.flush_seq = state["worker_id"], int(state["flush_seq"])
        self.flush()
