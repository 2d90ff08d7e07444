"""The experiment's Prometheus metrics: arm counters, CTRs, tests, lifts and ramps.

A mixin of :class:`worker.runtime.metrics.Metrics`, kept apart because the experiment's
metrics are one concern with their own fixed label sets (experiment, arm, test, bound).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from worker.experiments.monitor import OTHER

__all__ = ["ExperimentMetrics"]


class ExperimentMetrics:
    """Defines and records the experiment's metrics on the registry it is given."""

    _experiment: str | None
    _arms: frozenset[str]

    def _define_experiment_metrics(self, r: CollectorRegistry) -> None:
        exp_labels = ["experiment", "arm"]
        self.arm_impressions = Counter("freshrec_arm_impressions", "Impressions per experiment "
                                       "arm", exp_labels, registry=r)
        self.arm_clicks = Counter("freshrec_arm_clicks", "Clicks per experiment arm",
                                  exp_labels, registry=r)
        self.arm_purchases = Counter("freshrec_arm_purchases", "Purchases per experiment arm",
                                     exp_labels, registry=r)
        self.arm_requests = Counter("freshrec_arm_requests", "Requests (position-0 "
                                    "impressions) per experiment arm", exp_labels, registry=r)
        self.arm_ctr = Gauge("freshrec_arm_ctr", "The worker's CTR per arm over the last "
                             "ctr_window_s", exp_labels, registry=r)
        self.arm_ctr_cumulative = Gauge("freshrec_arm_ctr_cumulative", "The worker's CTR per "
                                        "arm since it started counting", exp_labels, registry=r)
        self.p_value = Gauge("freshrec_experiment_p_value", "p-value of a treatment vs control "
                             "(test = z | sequential: impression level; z_user | "
                             "sequential_user | purchase_user: user level; srm)",
                             ["experiment", "arm", "test"], registry=r)
        self.lift = Gauge("freshrec_experiment_lift", "Relative CTR lift vs control and its 95% "
                          "interval (bound = estimate | low | high)",
                          ["experiment", "arm", "bound"], registry=r)
        self.user_ctr = Gauge("freshrec_experiment_user_ctr", "CTR per arm as a ratio of "
                              "per-user sums (user-level statistics)", exp_labels, registry=r)
        self.user_lift = Gauge("freshrec_experiment_user_lift", "Relative CTR lift vs "
                               "control with its user-level (delta-method) 95% interval "
                               "(bound = estimate | low | high)",
                               ["experiment", "arm", "bound"], registry=r)
        self.ramp_share = Gauge("freshrec_experiment_ramp_share", "Live share of users of "
                                "a ramped arm (0 once stopped)", exp_labels, registry=r)
        self.ramp_step = Gauge("freshrec_experiment_ramp_step", "Current step of a ramped "
                               "arm (0 = the first)", exp_labels, registry=r)
        self.ramp_stopped = Gauge("freshrec_experiment_ramp_stopped", "1 while a guardrail "
                                  "keeps the arm stopped (until released)", exp_labels,
                                  registry=r)
        self.ramp_actions = Counter("freshrec_experiment_ramp_actions_total", "Guarded-ramp "
                                    "actions (action = advance | hold | stop)",
                                    ["experiment", "arm", "action"], registry=r)
        self.diff = Gauge("freshrec_experiment_diff", "Absolute CTR difference vs control and "
                          "its 95% interval (bound = estimate | low | high)",
                          ["experiment", "arm", "bound"], registry=r)
        self.srm_alert = Gauge("freshrec_experiment_srm_alert", "1 when the sample ratio "
                               "mismatches the configured shares", ["experiment"], registry=r)

    def configure_experiment(self, experiment: str, arms: Iterable[str]) -> None:
        """Name the experiment and its arms; creates every arm counter at zero.

        Counters that appear only at their first event already hold a value, and
        Prometheus' ``rate()`` never counts that first jump: the CTR recording rule read
        12-31% low after each start. Created at zero, the rates are exact from the start.
        """
        self._experiment = experiment
        self._arms = frozenset(arms)
        for arm in sorted(self._arms | {OTHER}):
            for counter in (self.arm_impressions, self.arm_clicks, self.arm_purchases,
                            self.arm_requests):
                counter.labels(experiment, arm)

    def record_arm_event(self, experiment: str, arm: str, etype: str, n: int) -> None:
        """Count events per arm (arm already mapped to a configured name or 'other')."""
        counter = {"impression": self.arm_impressions, "click": self.arm_clicks,
                   "purchase": self.arm_purchases, "request": self.arm_requests}.get(etype)
        if counter is not None:
            counter.labels(experiment, arm).inc(n)

    def record_experiment(self, stats: dict[str, Any]) -> None:
        """Export :meth:`worker.experiments.monitor.ExperimentMonitor.snapshot`."""
        exp = stats["experiment"]
        for arm, s in stats["arms"].items():
            if s.get("ctr_window") is not None:
                self.arm_ctr.labels(exp, arm).set(s["ctr_window"])
            if s["ctr"] is not None:
                self.arm_ctr_cumulative.labels(exp, arm).set(s["ctr"])
            if "p_value" in s:
                self.p_value.labels(exp, arm, "z").set(s["p_value"])
                for bound, suffix in (("estimate", ""), ("low", "_low"), ("high", "_high")):
                    self.lift.labels(exp, arm, bound).set(s["lift" + suffix])
                    self.diff.labels(exp, arm, bound).set(s["diff" + suffix])
            if "sequential_p" in s:
                self.p_value.labels(exp, arm, "sequential").set(s["sequential_p"])
            user = s.get("user", {})
            if "ctr" in user:
                self.user_ctr.labels(exp, arm).set(user["ctr"])
            if "p_value" in user:
                self.p_value.labels(exp, arm, "z_user").set(user["p_value"])
                for bound, suffix in (("estimate", ""), ("low", "_low"), ("high", "_high")):
                    self.user_lift.labels(exp, arm, bound).set(user["lift" + suffix])
            if "sequential_p" in user:
                self.p_value.labels(exp, arm, "sequential_user").set(user["sequential_p"])
            if "purchase_p_value" in user:
                self.p_value.labels(exp, arm, "purchase_user").set(user["purchase_p_value"])
        self.p_value.labels(exp, "all", "srm").set(stats["srm_p_value"])
        self.srm_alert.labels(exp).set(1 if stats["srm_alert"] else 0)

    def record_ramps(self, experiment: str, ramps: dict[str, dict[str, Any]],
                     actions: Sequence[tuple[str, str]]) -> None:
        """Export the guarded ramps' state and the actions of the last look."""
        for arm, r in ramps.items():
            self.ramp_share.labels(experiment, arm).set(r["share"])
            self.ramp_step.labels(experiment, arm).set(r["step"])
            self.ramp_stopped.labels(experiment, arm).set(1 if r["stopped"] else 0)
        for arm, action in actions:
            self.ramp_actions.labels(experiment, arm, action).inc()
