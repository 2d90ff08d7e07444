"""The worker's main loop: ingest continuously, train in cycles, checkpoint, then commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from consumers.base import SourceUnavailable
from consumers.pipeline import BatchReport, IngestPipeline
from model_store.base import StoreUnavailable
from model_store.checkpoints import CheckpointStore
from worker.experiments.drift_monitor import DriftMonitor
from worker.experiments.monitor import ExperimentMonitor
from worker.learning.feed import SampleFeed
from worker.learning.reports import CycleReport
from worker.runtime.metrics import Metrics

__all__ = ["Trainer", "Worker"]

log = logging.getLogger(__name__)


class Trainer(Protocol):
    """What the loop needs from the learning side (see :mod:`worker.learning.training`)."""

    def due(self, now_s: float, feed: SampleFeed) -> bool:
        """Whether a cycle should run now."""
        ...

    def run_cycle(self, feed: SampleFeed, now_s: float) -> Sequence[CycleReport]:
        """Run one cycle: validate, train, gate, publish. Raises only on infrastructure loss."""
        ...

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON state and tensors to checkpoint."""
        ...

    def load(self, state: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""
        ...

    def served_versions(self) -> dict[str, str | None]:
        """Each arm's current version as the store sees it (rollbacks included)."""
        ...

    def cycle_ended(self, now_s: float) -> None:
        """The cycle started by :meth:`run_cycle` ended at ``now_s``."""
        ...


class Worker:
    """Polls, processes, trains and checkpoints in one thread, so state is never shared.

    Offsets are committed only after the checkpoint holding their effects (buffers, joiner,
    dedupe window and model weights together) is durable; a failed checkpoint leaves them
    uncommitted, and a restart resumes from the last good checkpoint.

    Experiment statistics run on their own clock (``stats_interval_s``), independent of
    training, so the p-values a dashboard sees do not depend on cycle timing.
    """

    def __init__(self, pipeline: IngestPipeline, store: CheckpointStore, metrics: Metrics, *,
                 trainer: Trainer | None = None, monitor: ExperimentMonitor | None = None,
                 drift: DriftMonitor | None = None, checkpoint_interval_s: float = 5.0,
                 stats_interval_s: float = 5.0,
                 poll_max_records: int = 5000, poll_timeout_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self.store = store
        self.metrics = metrics
        self.trainer = trainer
        self.monitor = monitor
        self.drift = drift
        self.experiment: dict[str, Any] | None = None  # last experiment statistics
        self.last_reports: dict[str, CycleReport] = {}
        self.checkpoint_interval_s = checkpoint_interval_s
        self.stats_interval_s = stats_interval_s
        self.poll_max_records = poll_max_records
        self.poll_timeout_s = poll_timeout_s
        self.clock = clock
        self._last_checkpoint = self._last_stats = clock()
        self._dirty = False
        pipeline.set_persist(self._persist)

    def restore(self) -> bool:
        """Load the newest valid checkpoint, if any. Returns True if one was loaded."""
        ckpt = self.store.load_latest()
        if ckpt is None:
            return False
        self.pipeline.load_state_dict(ckpt.state["ingest"])
        if self.trainer is not None and "trainer" in ckpt.state:
            self.trainer.load(ckpt.state["trainer"], ckpt.tensors)
        if self.monitor is not None and "monitor" in ckpt.state:
            self.monitor.load(ckpt.state["monitor"])
        log.info("restored checkpoint %s (%d samples buffered)", ckpt.path.name,
                 len(self.pipeline.buffers))
        return True

    def run_once(self) -> BatchReport:
        """One poll + process; then a training cycle and/or checkpoint when due."""
        report = self.pipeline.step(self.poll_max_records, self.poll_timeout_s)
        self.metrics.health.beat()
        self.metrics.record_up("kafka", True)
        if report.messages:
            self._dirty = True
            self.metrics.record_batch(report)
            if self.monitor is not None:
                self.monitor.record(report)
        now = self.clock()
        if now - self._last_stats >= self.stats_interval_s:
            self.refresh_statistics()
        if self.trainer is not None and self.trainer.due(now, self.pipeline):
            start = time.perf_counter()
            reports = self.trainer.run_cycle(self.pipeline, now)
            self.trainer.cycle_ended(self.clock())
            self.metrics.record_cycles(reports, time.perf_counter() - start)
            self.last_reports.update((r.arm, r) for r in reports)
            if self.drift is not None:
                self.metrics.record_drift(self.drift.snapshot())
            self.checkpoint()
        elif now - self._last_checkpoint >= self.checkpoint_interval_s:
            if self._dirty:
                self.checkpoint()
            elif self.monitor is not None and self.monitor.unflushed():
                # Idle after an outage: nothing changed since the last checkpoint, which
                # holds these deltas and their tokens, so sending them needs no new one.
                self._last_checkpoint = now
                self._record_flush(self.monitor.flush())
        return report

    def refresh_statistics(self) -> dict[str, Any] | None:
        """Export consumer lag (from the log end) and the experiment statistics.

        Runs on its own clock: one look for the sequential tests per ``stats_interval_s``.
        """
        self._last_stats = self.clock()
        self.metrics.record_lag(self.pipeline.source.lag())
        if self.trainer is not None:
            try:  # what readers are served now: a `freshrec rollback` moves it too
                self.metrics.record_served_versions(self.trainer.served_versions())
            except StoreUnavailable as exc:
                log.debug("served versions unknown: %s", exc)
        if self.monitor is None:
            return None
        self.monitor.update()
        self.experiment = self.monitor.snapshot()
        self.metrics.record_experiment(self.experiment)
        return self.experiment

    def checkpoint(self) -> None:
        """Persist state and commit offsets (blocks; raises if either fails)."""
        start = time.perf_counter()
        self.pipeline.checkpoint()
        buffers = self.pipeline.buffers
        self.metrics.record_checkpoint(time.perf_counter() - start, len(buffers.recent),
                                       len(buffers.reservoir), len(self.pipeline.catalog))
        self._last_checkpoint = self.clock()
        self._dirty = False

    def run(self, stop: threading.Event, max_backoff_s: float = 30.0) -> None:
        """Loop until ``stop`` is set; checkpoint once more on the way out.

        An unreachable broker or Redis does not end the loop: the iteration is retried after
        an exponential backoff (0.5 s doubling to ``max_backoff_s``), with what the worker
        holds kept in memory and offsets left uncommitted until a checkpoint succeeds.
        """
        backoff = 0.5
        while not stop.is_set():
            try:
                self.run_once()
            except (SourceUnavailable, StoreUnavailable) as exc:
                dep = "kafka" if isinstance(exc, SourceUnavailable) else "redis"
                log.warning("%s unavailable, retrying in %.1f s: %s", dep, backoff, exc)
                self.metrics.record_loop_error(dep, str(exc)[:200])
                stop.wait(backoff)
                backoff = min(backoff * 2, max_backoff_s)
                continue
            backoff = 0.5
        try:
            self.checkpoint()
        except (SourceUnavailable, StoreUnavailable) as exc:
            # Uncommitted work is redelivered on restart and dropped by the dedupe window.
            log.warning("final checkpoint not committed (%s); a restart resumes from the "
                        "last good one", exc)

    def _persist(self, offsets: dict[tuple[str, int], int]) -> None:
        state: dict[str, Any] = {"ingest": self.pipeline.state_dict()}
        tensors: dict[str, np.ndarray] = {}
        if self.trainer is not None:
            state["trainer"], tensors = self.trainer.state()
        if self.monitor is not None:
            state["monitor"] = self.monitor.state()
        self.store.save(state, tensors, meta={"offsets": [[t, p, o] for (t, p), o
                                                          in offsets.items()]})
        if self.monitor is not None:
            # After the checkpoint that holds these deltas and their token: exactly once.
            # An outage leaves them in flight under the same token, re-sent next time.
            self._record_flush(self.monitor.flush())

    def _record_flush(self, flushed: bool) -> None:
        if self.monitor is not None and self.monitor.counters is not None:
            self.metrics.record_up("redis", flushed, "" if flushed else "counters not flushed")
