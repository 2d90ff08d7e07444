"""Every freshrec Prometheus metric, defined once; call sites use the ``record_*`` helpers.

Labels come from small fixed sets (event type, reason, arm, partition), never user or item
ids, so cardinality stays flat however large the catalog grows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from consumers.events import Reason
from consumers.joiner import JOIN_OUTCOMES
from consumers.pipeline import BatchReport

if TYPE_CHECKING:
    from worker.training import CycleReport

__all__ = ["Metrics"]


class Metrics:
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
                                       "arm's current published version", ["arm"], registry=r)
        self.items_encoded = Counter("freshrec_items_encoded", "Item texts run through the "
                                     "language model (cache misses)", registry=r)
        self.catalog_items = Gauge("freshrec_catalog_items", "Items with a known text",
                                   registry=r)
        for reason in Reason:
            self.events_rejected.labels(reason.value)
        for outcome in JOIN_OUTCOMES:
            self.join_outcomes.labels(outcome)

    def serve(self, host: str, port: int) -> None:
        """Expose ``/metrics`` over HTTP in a daemon thread (non-blocking)."""
        start_http_server(port, addr=host, registry=self.registry)

    def record_batch(self, report: BatchReport) -> None:
        """Account for one ingestion step."""
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

    def record_cycle(self, report: CycleReport) -> None:
        """Account for one lineage's cycle."""
        arm = report.arm
        if report.published_version is not None:
            self.publish_seconds.observe(report.publish_s)
            self.published_version.labels(arm).set(int(report.published_version.rsplit("-", 1)[1]))
        if report.rejected_reason == "gate":
            outcome = "rejected"
        elif report.published_version is not None:
            outcome = "published"
        else:
            outcome = report.rejected_reason or "idle"
        self.train_cycles.labels(arm, outcome).inc()
        if report.n_trained:
            self.train_samples.labels(arm).inc(report.n_trained)
        if report.train_loss == report.train_loss:  # not NaN
            self.train_loss.labels(arm).set(report.train_loss)
        if report.progressive_auc == report.progressive_auc:
            self.progressive_auc.labels(arm).set(report.progressive_auc)
        if report.progressive_logloss == report.progressive_logloss:
            self.progressive_logloss.labels(arm).set(report.progressive_logloss)

    def record_lag(self, lag: dict[tuple[str, int], int]) -> None:
        """Set the per-partition lag gauges."""
        for (topic, partition), value in lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(value)

    def record_buffers(self, recent: int, reservoir: int) -> None:
        """Set the replay-buffer size gauges."""
        self.replay_samples.labels("recent").set(recent)
        self.replay_samples.labels("reservoir").set(reservoir)
