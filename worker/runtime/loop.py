"""The worker's main loop: ingest continuously, train in cycles beside it, checkpoint, commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from consumers.base import DeadLetterUnavailable, SourceUnavailable
from consumers.eviction import ItemEvictor
from consumers.pipeline import BatchReport, IngestPipeline
from consumers.snapshot import FeedSnapshot
from model_store.base import StoreUnavailable
from model_store.checkpoints import CheckpointStore, CheckpointUnavailable
from worker.experiments.drift_monitor import DriftMonitor
from worker.experiments.monitor import ExperimentMonitor
from worker.experiments.ramp import RampController, live_shares
from worker.experiments.summary import Counts
from worker.learning.reports import CycleReport
from worker.runtime.checkpointing import CheckpointChain
from worker.runtime.metrics import Metrics
from worker.runtime.roles import SampleSink, Trainer

__all__ = ["Trainer", "Worker"]

log = logging.getLogger(__name__)


class Worker:
    """Polls and processes in one thread; a training cycle runs beside it on another.

    When a cycle is due, the loop takes a :class:`FeedSnapshot` of the pipeline (fresh
    samples, replay draws, catalog texts) and starts the cycle on the trainer thread with
    it; polling, parsing, joining and buffering go on meanwhile, so under a backlog the next
    cycle finds everything that arrived during this one (cycles grow instead of
    multiplying). torch releases the GIL in its kernels, so the two overlap on any machine
    with a second core, and a GPU is fed while the CPU ingests. Only one cycle runs at a
    time, and nothing but the item row index is shared with it (rows are handed
    out under a lock, and freed only between cycles).

    Offsets are committed only after the checkpoint holding their effects (buffers, joiner,
    dedupe window and model weights together) is durable; a failed checkpoint leaves them
    uncommitted, and a restart resumes from the last good one. No checkpoint is taken while
    a cycle runs (the model is changing): it waits for the cycle's end, and a rebalance that
    needs one waits for the cycle first. Checkpoints keep their own clock
    (``checkpoint_interval_s``), not one per cycle: with cycles a second apart, a
    checkpoint after each one took 13-28% of the loop's time (1,000 requests/s, 100k
    items, 2 cores) and paused polling every time.

    Experiment statistics run on their own clock (``stats_interval_s``), independent of
    training, so the p-values a dashboard sees do not depend on cycle timing.
    """

    def __init__(self, pipeline: IngestPipeline, store: CheckpointStore, metrics: Metrics, *,
                 trainer: Trainer | None = None, monitor: ExperimentMonitor | None = None,
                 drift: DriftMonitor | None = None, checkpoint_interval_s: float = 5.0,
                 stats_interval_s: float = 5.0,
                 poll_max_records: int = 5000, poll_timeout_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, overlap: bool = True,
                 checkpoint_full_every: int = 20, evictor: ItemEvictor | None = None,
                 samples: SampleSink | None = None, ramps: RampController | None = None,
                 shared_totals: Callable[[], Counts] | None = None) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.trainer = trainer
        self.monitor = monitor
        self.drift = drift
        # Guarded ramps, judged on the totals every worker adds to (Redis), not this one's.
        self.ramps = ramps if ramps is not None and ramps.ramped else None
        self.shared_totals = shared_totals
        self.experiment: dict[str, Any] | None = None  # last experiment statistics
        self.last_reports: dict[str, CycleReport] = {}
        self.checkpoint_interval_s = checkpoint_interval_s
        self.stats_interval_s = stats_interval_s
        self.poll_max_records = poll_max_records
        self.poll_timeout_s = poll_timeout_s
        self.clock = clock
        self._last_checkpoint = self._last_stats = clock()
        self._dirty = False
        self._checkpointed = False  # a checkpoint exists (restored or written)
        # overlap=False runs each cycle inline on the polling thread (the previous behaviour).
        self._trainer_thread = (ThreadPoolExecutor(1, thread_name_prefix="freshrec-trainer")
                                if overlap and trainer is not None else None)
        self._cycle: Future[tuple[Sequence[CycleReport], float]] | None = None
        self.chain = CheckpointChain(store, metrics, checkpoint_full_every)
        self.evictor = evictor
        # The ingest tier: samples go to the samples topic as they are joined, and are
        # flushed before every checkpoint, so offsets are committed only after the samples
        # their events produced are durable.
        self.samples = samples
        pipeline.set_persist(self._persist)

    def restore(self) -> bool:
        """Load the newest valid checkpoint chain, if any. Returns True if one was loaded."""
        self._checkpointed = self.chain.restore(self.pipeline, self.trainer, self.monitor)
        return self._checkpointed

    def run_once(self) -> BatchReport:
        """One poll + process; then a training cycle and/or checkpoint when due."""
        if self.evictor is not None and self.evictor.over_hard_limit(self.pipeline.buffers):
            # Items are evicted between cycles; a cycle long enough for ingestion to pass
            # the hard limit is waited for first (backpressure), so rows stay bounded.
            if self._cycle is not None:
                self._settle_cycle()
                self.checkpoint()
            self._evict(self.evictor)
        report = self.pipeline.step(self.poll_max_records, self.poll_timeout_s)
        if self.samples is not None and self.pipeline.fresh:
            self.samples.send(self.pipeline.take_fresh())
        self.metrics.health.beat()
        self.metrics.record_up("kafka", True)
        if report.messages or report.handover:  # a rebalance moved join state
            self._dirty = True
            self.metrics.record_batch(report)
            if self.monitor is not None:
                self.monitor.record(report)
        now = self.clock()
        if now - self._last_stats >= self.stats_interval_s:
            self.refresh_statistics()
        if self._cycle is None and self.evictor is not None and self.evictor.due(
                self.pipeline.buffers, self.pipeline.catalog):
            self._evict(self.evictor)
        if self._cycle is not None:
            if self._cycle.done():
                self._cycle_done()
        elif self.trainer is not None and self.trainer.due(now, self.pipeline):
            self._start_cycle(self.trainer, now)
        elif now - self._last_checkpoint >= self.checkpoint_interval_s:
            if self._dirty:
                self.checkpoint()
            elif self.monitor is not None and self.monitor.unflushed():
                # Idle after an outage: nothing changed since the last checkpoint, which
                # holds these deltas and their tokens, so sending them needs no new one.
                self._last_checkpoint = now
                self._record_flush(self.monitor.flush())
        return report

    def _evict(self, evictor: ItemEvictor) -> None:
        """Evict items past the cap (no cycle runs now, so no snapshot holds their rows)."""
        dropped = evictor.texts_dropped
        waiting = () if self.trainer is None else (s.item_id for s in self.pipeline.fresh)
        rows = evictor.run(self.pipeline.buffers, self.pipeline.catalog, waiting)
        self.metrics.record_evicted("catalog_texts", evictor.texts_dropped - dropped)
        if len(rows):
            if self.trainer is not None:
                self.trainer.forget(rows)
            self.chain.force_full()  # a delta cannot express freed rows
            self.metrics.record_evicted("items", len(rows))
            log.info("evicted %d least recently seen items (cap %d)", len(rows),
                     evictor.max_items)

    @property
    def cycle_running(self) -> bool:
        """Whether a training cycle is in flight on the trainer thread."""
        return self._cycle is not None

    def _start_cycle(self, trainer: Trainer, now: float) -> None:
        if self._trainer_thread is None:
            self._cycle = Future()
            self._cycle.set_result(_timed(trainer.run_cycle, self.pipeline, now))
            self._cycle_done()
            return
        rows, texts = trainer.cycle_budget(self.pipeline.pending())
        feed = FeedSnapshot.take(self.pipeline, rows, texts)
        self._cycle = self._trainer_thread.submit(_timed, trainer.run_cycle, feed, now)

    def _cycle_done(self) -> None:
        """Record the finished cycle; checkpoint now if one is due (between cycles)."""
        self._settle_cycle()
        if self.clock() - self._last_checkpoint >= self.checkpoint_interval_s:
            self.checkpoint()

    def _settle_cycle(self) -> None:
        """Wait for the cycle in flight and record it (re-raising what it raised)."""
        cycle, self._cycle = self._cycle, None
        if cycle is None or self.trainer is None:
            return
        reports, seconds = cycle.result()
        self._dirty = True  # the model moved: the next checkpoint holds it
        self.trainer.cycle_ended(self.clock())
        self.metrics.record_cycles(reports, seconds)
        self.last_reports.update((r.arm, r) for r in reports)
        if self.drift is not None:
            self.metrics.record_drift(self.drift.snapshot())

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
        if self.ramps is not None and self.shared_totals is not None:
            self._look_at_ramps(self.experiment)
        self.metrics.record_experiment(self.experiment)
        return self.experiment

    def _look_at_ramps(self, experiment: dict[str, Any]) -> None:
        """Advance, hold or stop ramped arms; their SRM replaces the cumulative one."""
        assert self.ramps is not None and self.shared_totals is not None  # noqa: S101
        try:
            state = self.ramps.look(self.shared_totals())
        except StoreUnavailable as exc:
            log.debug("ramps not judged (Redis unavailable): %s", exc)
            return
        exp = self.ramps.exp
        shares = live_shares(exp, state)
        experiment["srm_p_value"] = self.ramps.srm_p_value
        experiment["srm_alert"] = self.ramps.srm_p_value < exp.srm_p_value
        experiment["ramps"] = {a: {"step": r.step, "share": shares[a], "stopped": r.stopped,
                                   "held": r.held, "reason": r.reason}
                               for a, r in state.items()}
        self.metrics.record_ramps(exp.name, experiment["ramps"], self.ramps.actions)

    def checkpoint(self) -> None:
        """Persist state and commit offsets (blocks; raises if either fails)."""
        start = time.perf_counter()
        self.pipeline.checkpoint()
        buffers = self.pipeline.buffers
        self.metrics.record_checkpoint(time.perf_counter() - start, len(buffers.recent),
                                       len(buffers.reservoir), len(self.pipeline.catalog))
        self._last_checkpoint = self.clock()
        self._dirty = False
        self._checkpointed = True
        self.metrics.record_up("checkpoint", True)
        self.metrics.record_up("dlq", True)  # its letters were acknowledged first

    def run(self, stop: threading.Event, max_backoff_s: float = 30.0) -> None:
        """Loop until ``stop`` is set; checkpoint once more on the way out.

        An unreachable broker or Redis does not end the loop: the iteration is retried after
        an exponential backoff (0.5 s doubling to ``max_backoff_s``), with what the worker
        holds kept in memory and offsets left uncommitted until a checkpoint succeeds.
        """
        backoff = 0.5
        while not stop.is_set():
            try:
                if not self._checkpointed:
                    # Before the first message: where the dead-letter topic ends now. A
                    # kill before the next checkpoint then restores this one, and the dead
                    # letters sent meanwhile are read back instead of sent twice.
                    self.checkpoint()
                self.run_once()
            except (SourceUnavailable, StoreUnavailable, CheckpointUnavailable) as exc:
                dep = _dependency(exc)
                log.warning("%s unavailable, retrying in %.1f s: %s", dep, backoff, exc)
                self.metrics.record_loop_error(dep, str(exc)[:200])
                stop.wait(backoff)
                backoff = min(backoff * 2, max_backoff_s)
                continue
            backoff = 0.5
        try:
            self.checkpoint()  # waits for a cycle in flight first
        except (SourceUnavailable, StoreUnavailable, CheckpointUnavailable) as exc:
            # Uncommitted work is redelivered on restart and dropped by the dedupe window.
            log.warning("final checkpoint not committed (%s); a restart resumes from the "
                        "last good one", exc)

    def _persist(self, offsets: dict[tuple[str, int], int]) -> None:
        if self._cycle is not None:  # the model must not change while it is saved
            self._settle_cycle()
        if self.samples is not None:
            self.samples.send(self.pipeline.take_fresh())
            self.samples.flush()
        self.chain.save(offsets, self.pipeline, self.trainer, self.monitor)
        if self.monitor is not None:
            # After the checkpoint that holds these deltas and their token: exactly once.
            # An outage leaves them in flight under the same token, re-sent next time.
            self._record_flush(self.monitor.flush())

    def _record_flush(self, flushed: bool) -> None:
        if self.monitor is not None and self.monitor.counters is not None:
            self.metrics.record_up("redis", flushed, "" if flushed else "counters not flushed")


def _dependency(exc: Exception) -> str:
    """The dependency an ``*Unavailable`` error is about (a metric and readiness label)."""
    if isinstance(exc, DeadLetterUnavailable):
        return "dlq"
    if isinstance(exc, SourceUnavailable):
        return "kafka"
    return "checkpoint" if isinstance(exc, CheckpointUnavailable) else "redis"


def _timed(run: Callable[[Any, float], Sequence[CycleReport]], feed: Any, now: float
           ) -> tuple[Sequence[CycleReport], float]:
    start = time.perf_counter()
    reports = run(feed, now)
    return reports, time.perf_counter() - start
