"""Every freshrec Prometheus metric, defined once; call sites use the ``record_*`` helpers.

Labels come from small fixed sets (event type, reason, arm, partition), never user or item
ids, so cardinality stays flat however large the catalog grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumers.events import Reason
from consumers.joiner import JOIN_OUTCOMES
from consumers.pipeline import BatchReport
from worker.experiments.monitor import fold_arm
from worker.learning.reports import CycleOutcome, CycleReport
from worker.runtime.experiment_metrics import ExperimentMetrics
from worker.runtime.health import Health, HealthServer

__all__ = ["Metrics"]


class Metrics(ExperimentMetrics):
    """All metrics on one registry (a fresh one per instance, so tests never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter("freshrec_events_consumed", "Valid messages accepted, "
                                       "by event type (item = catalog update)", ["type"],
                                       registry=r)
        self.events_rejected = Counter("freshrec_events_rejected", "Messages sent to the "
                                       "dead-letter topic, by reason", ["reason"], registry=r)
        self.events_duplicate = Counter("freshrec_events_duplicate", "Redelivered events "
                                        "dropped by event_id", registry=r)
        self.join_outcomes = Counter("freshrec_join_outcomes", "Clicks/impressions that "
                                     "produced no sample, by outcome", ["outcome"], registry=r)
        self.samples = Counter("freshrec_samples", "Labelled samples produced", ["label"],
                               registry=r)
        self.consumer_lag = Gauge("freshrec_consumer_lag", "Messages behind the log end",
                                  ["topic", "partition"], registry=r)
        self.replay_samples = Gauge("freshrec_replay_buffer_samples", "Samples held per "
                                    "replay buffer", ["buffer"], registry=r)
        self.checkpoints = Counter("freshrec_checkpoints", "Durable snapshots followed by an "
                                   "offset commit", registry=r)
        self.state_evicted = Counter("freshrec_state_evicted", "State entries dropped by their "
                                     "caps (closed_keys, user_histories, dedupe_ids, items, "
                                     "catalog_texts)",
                                     ["state"], registry=r)
        for state in ("closed_keys", "user_histories", "dedupe_ids", "items", "catalog_texts"):
            self.state_evicted.labels(state)
        self.join_handover = Counter("freshrec_join_handover", "Pending impressions moved "
                                     "at rebalances (released to the partition's next owner, "
                                     "adopted from its last); hand-overs refused as stale or "
                                     "unreadable", ["event"], registry=r)
        for event in ("released", "adopted", "stale", "unavailable"):
            self.join_handover.labels(event)
        self.checkpoint_bytes = Counter("freshrec_checkpoint_bytes", "Bytes written by "
                                        "checkpoints (kind: full, or a delta of what changed "
                                        "since the previous one)", ["kind"], registry=r)
        self.checkpoint_seconds = Histogram("freshrec_checkpoint_duration_seconds",
                                            "Snapshot + commit time", registry=r)
        self.train_cycles = Counter("freshrec_train_cycles", "Training cycles by arm and "
                                    "outcome (published, rejected, frozen, pinned, idle)",
                                    ["arm", "outcome"], registry=r)
        self.train_loss = Gauge("freshrec_train_loss", "Mean training loss of the last cycle",
                                ["arm"], registry=r)
        self.train_samples = Counter("freshrec_train_samples", "Samples used in training "
                                     "steps", ["arm"], registry=r)
        self.cycle_seconds = Histogram("freshrec_train_cycle_duration_seconds", "Wall time of "
                                       "one training cycle (all arms)", registry=r,
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.progressive_auc = Gauge("freshrec_progressive_auc", "AUC of the served model on "
                                     "samples it had not trained on", ["arm"], registry=r)
        self.progressive_logloss = Gauge("freshrec_progressive_logloss", "Log-loss of the "
                                         "served model on unseen samples", ["arm"], registry=r)
        self.publish_seconds = Histogram("freshrec_publish_duration_seconds", "Time to write "
                                         "a version's vectors and flip the pointer", registry=r,
                                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
        self.published_version = Gauge("freshrec_published_version", "Sequence number of the "
                                       "version the arm serves now (rollbacks included)",
                                       ["arm"], registry=r)
        self.publish_rows = Counter("freshrec_publish_rows", "Item rows written to the "
                                    "vector store by publishes (kind: full or delta)",
                                    ["arm", "kind"], registry=r)
        self.published_layers = Gauge("freshrec_published_layers", "Layers the arm's last "
                                      "published version reads (1: a full version; a delta "
                                      "reads its ancestors' unchanged rows)", ["arm"],
                                      registry=r)
        self.gate_rejected = Gauge("freshrec_gate_rejected_in_a_row", "Consecutive gate "
                                   "rejections of the arm's candidate (0 after a publish)",
                                   ["arm"], registry=r)
        self.items_encoded = Counter("freshrec_items_encoded", "Item texts run through the "
                                     "language model (cache misses)", registry=r)
        self.catalog_items = Gauge("freshrec_catalog_items", "Items with a known text",
                                   registry=r)
        self._define_experiment_metrics(r)
        self.drift_score = Gauge("freshrec_drift_score", "Drift score per signal",
                                 ["signal", "arm"], registry=r)
        self.drift_alert = Gauge("freshrec_drift_alert", "1 while a drift signal alerts",
                                 ["signal", "arm"], registry=r)
        self.drift_responses = Counter("freshrec_drift_responses", "Cycles whose replay mix was "
                                       "boosted towards recent data by a drift alert", registry=r)
        self.up = Gauge("freshrec_up", "1 while the dependency answered its last call "
                        "(kafka, redis, checkpoint: the checkpoint disk, dlq: the dead-letter "
                        "producer)", ["dependency"], registry=r)
        self.loop_errors = Counter("freshrec_loop_errors", "Loop iterations that failed on an "
                                   "unavailable dependency and were retried after a backoff",
                                   ["dependency"], registry=r)
        self.health = Health()
        for dep in ("kafka", "redis", "checkpoint", "dlq"):
            self.record_up(dep, True)
        for reason in Reason:
            self.events_rejected.labels(reason.value)
        for outcome in JOIN_OUTCOMES:
            self.join_outcomes.labels(outcome)
        self._experiment: str | None = None
        self._arms: frozenset[str] = frozenset()

    def serve(self, host: str, port: int) -> HealthServer:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` in a daemon thread (``close()``)."""
        return HealthServer(host, port, self.registry, self.health)

    def record_up(self, dependency: str, up: bool, detail: str = "") -> None:
        """Whether ``dependency`` answered its last call (metric and readiness)."""
        self.up.labels(dependency).set(1 if up else 0)
        self.health.set(dependency, up, detail)

    def record_loop_error(self, dependency: str, detail: str) -> None:
        """A loop iteration failed on ``dependency``; it is retried after a backoff."""
        self.loop_errors.labels(dependency).inc()
        self.record_up(dependency, False, detail)

    def record_batch(self, report: BatchReport) -> None:
        """Account for one ingestion step."""
        for state, n in report.evicted.items():
            self.state_evicted.labels(state).inc(n)
        for event, n in report.handover.items():
            self.join_handover.labels(event).inc(n)
        for etype, n in report.consumed.items():
            self.events_consumed.labels(etype).inc(n)
        for reason, n in report.rejected.items():
            self.events_rejected.labels(reason).inc(n)
        if report.duplicates:
            self.events_duplicate.inc(report.duplicates)
        for outcome, n in report.join_outcomes.items():
            self.join_outcomes.labels(outcome).inc(n)
        if report.samples:
            self.samples.labels("1").inc(report.positives)
            self.samples.labels("0").inc(report.samples - report.positives)
        if self._experiment is not None:
            for (arm, etype), n in report.arm_events.items():
                self.record_arm_event(self._experiment, fold_arm(arm, self._arms), etype, n)

    def record_cycles(self, reports: Sequence[CycleReport], duration_s: float) -> None:
        """Account for one training cycle (every lineage's report, and its wall time)."""
        self.cycle_seconds.observe(duration_s)
        for report in reports:
            self.record_cycle(report)

    def record_cycle(self, report: CycleReport) -> None:
        """Account for one lineage's part of a cycle."""
        arm = report.arm
        seq = report.version_seq
        if seq is not None:
            self.publish_seconds.observe(report.publish_s)
            self.published_version.labels(arm).set(seq)
            self.publish_rows.labels(arm, "full" if report.published_layers <= 1
                                     else "delta").inc(report.published_rows)
            self.published_layers.labels(arm).set(report.published_layers)
        self.train_cycles.labels(arm, report.outcome.value).inc()
        if report.outcome in (CycleOutcome.PUBLISHED, CycleOutcome.REJECTED):
            self.gate_rejected.labels(arm).set(report.rejected_in_a_row)
        if report.outcome is CycleOutcome.UNAVAILABLE:
            self.record_up("redis", False, "publish failed")
        elif seq is not None:
            self.record_up("redis", True)
        if report.n_trained:
            self.train_samples.labels(arm).inc(report.n_trained)
        if report.train_loss == report.train_loss:  # not NaN
            self.train_loss.labels(arm).set(report.train_loss)
        if report.progressive_auc == report.progressive_auc:
            self.progressive_auc.labels(arm).set(report.progressive_auc)
        if report.progressive_logloss == report.progressive_logloss:
            self.progressive_logloss.labels(arm).set(report.progressive_logloss)

    def record_drift(self, snap: dict[str, Any]) -> None:
        """Export :meth:`worker.experiments.drift_monitor.DriftMonitor.snapshot`."""
        ref = snap["reference_arm"]
        for signal in ("score_psi", "loss_adwin", "label_ctr"):
            self.drift_score.labels(signal, ref).set(snap[signal]["score"])
            self.drift_alert.labels(signal, ref).set(1 if snap[signal]["alert"] else 0)
        for arm, e in snap["embedding"].items():
            self.drift_score.labels("embedding_cosine_shift", arm).set(e["mean_cosine_shift"])
            self.drift_score.labels("embedding_moved_share", arm).set(e["moved_share"])
            self.drift_alert.labels("embedding_moved_share", arm).set(1 if e["alert"] else 0)

    def record_checkpoint(self, duration_s: float, recent: int, reservoir: int,
                          catalog_items: int) -> None:
        """Account for one durable checkpoint + commit, and the state sizes it covered."""
        self.checkpoints.inc()
        self.checkpoint_seconds.observe(duration_s)
        self.record_buffers(recent, reservoir)
        self.catalog_items.set(catalog_items)

    def record_evicted(self, state: str, n: int) -> None:
        """Count state entries dropped by a cap outside an ingestion step (items)."""
        self.state_evicted.labels(state).inc(n)

    def record_checkpoint_bytes(self, kind: str, nbytes: int) -> None:
        """Count the bytes one checkpoint wrote (kind: full | delta)."""
        self.checkpoint_bytes.labels(kind).inc(nbytes)

    def record_encoded(self, n: int) -> None:
        """Count item texts run through the language model."""
        if n:
            self.items_encoded.inc(n)

    def record_drift_response(self) -> None:
        """Count a drift alert that boosted the replay mix towards recent data."""
        self.drift_responses.inc()

    def record_published_version(self, arm: str, seq: int) -> None:
        """Set the arm's served version (after a publish, or a rollback seen in the store)."""
        self.published_version.labels(arm).set(seq)

    def record_served_versions(self, versions: dict[str, str | None]) -> None:
        """Set ``freshrec_published_version`` to the sequence each arm serves now."""
        for arm, version in versions.items():
            seq = version.rsplit("-", 1)[-1] if version is not None else ""
            if seq.isdigit():  # versions are "<arm>-<seq>"; anything else is not ours
                self.published_version.labels(arm).set(int(seq))

    def record_lag(self, lag: dict[tuple[str, int], int]) -> None:
        """Set the per-partition lag gauges."""
        for (topic, partition), value in lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(value)

    def record_buffers(self, recent: int, reservoir: int) -> None:
        """Set the replay-buffer size gauges."""
        self.replay_samples.labels("recent").set(recent)
        self.replay_samples.labels("reservoir").set(reservoir)
