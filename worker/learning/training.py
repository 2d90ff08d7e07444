"""Incremental fine-tuning cycles: encode ▸ progressive validation ▸ train ▸ gate ▸ publish.

Every cycle, each lineage's *served* model first scores the samples that arrived since the
last cycle (progressive validation: honest online AUC, since it never trained on them).
Then the candidates train on every new sample once, each batch topped up from the replay
buffers (recent window + reservoir) so the new is learnt without forgetting the old. A
candidate is published only if its log-loss on held-out recent samples is not worse than
the served model's by more than a tolerance; otherwise it is discarded and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812 - the usual alias

from consumers.columns import HOLDOUT_BUCKETS, Columns
from consumers.events import Sample
from model_store.base import VectorStore
from worker.config import ArmSettings, TrainingSettings
from worker.learning.batches import Batch, batch_from_rows, cycle_plan, is_holdout, stack_history
from worker.learning.evaluation import auc, logloss
from worker.learning.feed import DriftObserver, SampleFeed
from worker.learning.items import ItemTable
from worker.learning.lineage import GradSyncFn, Lineage
from worker.learning.model import FreshRecModel
from worker.learning.publishing import Published, publish_version
from worker.learning.reports import CycleOutcome, CycleReport
from worker.learning.scoring import predict, scores
from worker.learning.trainer_state import TrainerState

__all__ = ["CycleReport", "Trainer", "is_holdout"]

log = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[str]], np.ndarray]


class Trainer(TrainerState):
    """Runs cycles over all lineages; implements :class:`worker.runtime.loop.Trainer`.

    Args:
        arms: the experiment arms (one lineage each).
        cfg: training settings.
        table: the shared item table (semantic vectors live there).
        encode: text -> vectors (a :class:`worker.learning.encoder.SemanticCache` ``get``).
        store: where item vectors are published.
        dim: default vector width; an arm may override it (e.g. a small student).
        device: training device.
        seed: seeds model initialisation and batch order.
        on_report: called with each :class:`CycleReport` (metrics, terminal view).
        drift: where progressive-validation output and publishes are reported, and which
            sets the replay mix while drift alerts.
        grad_sync: averages gradients across data-parallel trainer ranks
            (:class:`worker.learning.distributed.GradSync`); None for one process.
    """

    def __init__(self, arms: Sequence[ArmSettings], cfg: TrainingSettings, table: ItemTable,
                 encode: EncodeFn, store: VectorStore, *, dim: int = 64,
                 device: torch.device | None = None, seed: int = 0,
                 on_report: Callable[[CycleReport], None] | None = None,
                 drift: DriftObserver | None = None, grad_sync: GradSyncFn | None = None
                 ) -> None:
        self.cfg = cfg
        self.table = table
        self.encode = encode
        self.store = store
        self.device = device or torch.device("cpu")
        self.on_report = on_report
        self.drift = drift
        self.lineages: dict[str, Lineage] = {}
        for k, arm in enumerate(arms):
            model = FreshRecModel(table.text_dim, arm.dim or dim, seed=seed + k,
                                  learn_order=cfg.user_tower,
                                  context_vectors=cfg.context_vectors).to(self.device)
            self.lineages[arm.name] = Lineage(arm.name, arm.lineage, model, cfg.lr, arm.teacher,
                                              sparse_lr=cfg.sparse_lr)
            self.lineages[arm.name].sync = grad_sync
        # Teachers train before their students within a cycle.
        self._order = sorted(self.lineages.values(), key=lambda lin: lin.kind == "distilled")
        self._last_cycle: float | None = None
        self.last_reports: dict[str, CycleReport] = {}
        self.cycles = 0

    def due(self, now_s: float, feed: SampleFeed) -> bool:
        """Time-triggered when there is anything new; count-triggered on a burst."""
        pending = feed.pending()
        if pending >= self.cfg.cycle_trigger_samples:
            return True
        if self._last_cycle is not None and now_s - self._last_cycle < self.cfg.cycle_interval_s:
            return False
        return pending > 0 or feed.changed_items() > 0

    def cycle_budget(self, pending: int) -> tuple[int, int]:
        """(replay rows per buffer, catalog texts) a cycle over ``pending`` samples uses."""
        new = int(pending * (1 - self.cfg.holdout_share)) + 1
        replay = sum(step[2] for step in cycle_plan(new, self.cfg, self.cycles))
        return replay, self.cfg.encode_per_cycle

    def run_cycle(self, feed: SampleFeed, now_s: float) -> list[CycleReport]:
        """One full cycle for every lineage; returns a report per lineage."""
        start = time.perf_counter()
        self._last_cycle = now_s
        self.table.attach(feed.item_index)  # the rows the replay columns were written with
        new_items = self._encode_changed(feed)
        watermark = feed.watermark()  # every partition was read past this event time
        fresh, cols = feed.take_fresh_columns()
        self.table.sync()  # the columns' ids got rows when they were buffered (or converted)
        self._rows_ready()
        for lin in self.lineages.values():
            lin.grow(len(self.table))
        progressive = {name: self._progressive(lin, fresh, cols)
                       for name, lin in self.lineages.items()}
        batches = self._batches(cols, feed)
        gate_set = feed.held_out_columns(self._holdout_below, self.cfg.gate_samples)
        max_ts = max((s.ts for s in fresh), default=0)
        reports = []
        for lin in self._order:
            # Each lineage trains, is gated and publishes before the next one trains
            # (teachers first), so its version waits for its own steps only.
            report = self._gate_and_publish(lin, gate_set, new_items, (max_ts, watermark), fresh,
                                            progressive[lin.name], self._train(lin, batches))
            report = replace(report, duration_s=time.perf_counter() - start)
            lin.cycles += 1
            self.last_reports[lin.name] = report
            reports.append(report)
            if self.on_report is not None:
                self.on_report(report)
        self.cycles += 1
        return reports

    def cycle_ended(self, now_s: float) -> None:
        """Start the interval to the next cycle at ``now_s``, the end of this one.

        However long cycles take, ingestion then gets ``cycle_interval_s`` between them
        (the caller's clock), so a backlog is drained in large polls and trained in larger
        cycles instead of one slow cycle per small poll.
        """
        self._last_cycle = now_s

    def _encode_changed(self, feed: SampleFeed) -> int:
        changed = feed.take_changed_texts(self.cfg.encode_per_cycle)
        if changed:
            ids, texts = zip(*changed, strict=True)
            self.table.set_semantic(list(ids), self.encode(list(texts)))
        return len(changed)

    @property
    def _holdout_below(self) -> int:
        """Requests in buckets below this are held out (never trained on)."""
        return int(self.cfg.holdout_share * HOLDOUT_BUCKETS)

    def _progressive(self, lin: Lineage, fresh: list[Sample], cols: Columns
                     ) -> tuple[float, float]:
        if not fresh or lin.published is None:
            return float("nan"), float("nan")
        probs, labels = predict(lin.served, cols, self.table, self.device), cols.label
        if self.drift is not None and lin.name == self.drift.reference_arm:
            # Data drift is read off a model that has stopped learning, on the traffic it
            # served itself: then neither our training nor another arm's policy moves it.
            settled = lin.cycles >= self.cfg.warmup_cycles + self.drift.start_after_cycles
            if lin.kind != "frozen" or settled:
                own = np.array([s.arm == lin.name for s in fresh])
                times = np.array([s.ts for s in fresh], np.int64)
                self.drift.observe_predictions(lin.name, probs[own], labels[own], times[own])
        return auc(labels, probs), logloss(labels, probs)

    def _batches(self, fresh: Columns, feed: SampleFeed) -> list[tuple[Batch, np.ndarray]]:
        """The cycle's batches: every new sample once, each topped up from the replay columns.

        The new samples come as columns (their rows were found when they were buffered);
        the replay part of every batch is a vectorised gather from the buffers' integer
        columns, and a batch is one copy to the device (:func:`batch_from_rows`), so the
        input path keeps up with a GPU. Built once, every training lineage steps through
        the same batches. Each comes with the item rows it looks up.
        """
        trains = any(lin.trains(self.cfg.warmup_cycles) for lin in self._order)
        share = self.cfg.holdout_share
        new = fresh.take(fresh.bucket >= self._holdout_below)
        plan = self._plan(new.size, feed.buffered()) if trains else []
        # None: the feed's configured mix, unless a drift alert boosts the recent share.
        recent_share = (self.drift.next_recent_share(None)
                        if self.drift is not None and plan else None)
        out = []
        for lo, hi, replay in plan:
            items, hist, labels = feed.replay_rows(replay, recent_share, share)
            if hi > lo:
                items = np.concatenate([new.item[lo:hi], items])
                labels = np.concatenate([new.label[lo:hi], labels])
                hist = stack_history(new.hist[lo:hi], hist)
            if not len(items) and self.skip_empty:
                continue
            self.table.sync()
            out.append((batch_from_rows(items, hist, labels, self.device),
                        np.concatenate([items, np.maximum(hist.ravel(), 0)])))
        return out

    def _train(self, lin: Lineage, batches: list[tuple[Batch, np.ndarray]]) -> float | None:
        """One step per batch; the mean training loss (None: the lineage did not train)."""
        if not batches or not lin.trains(self.cfg.warmup_cycles):
            return None
        total = torch.zeros((), device=self.device)
        for batch, looked_up in batches:
            lin.grow(len(self.table))
            total += self.step(lin, batch, looked_up)
        return float(total) / len(batches)  # one device sync

    # Hooks where trainer ranks agree (worker.learning.ranked); one process needs none.
    skip_empty = True  # a step with no rows is skipped (a rank takes it: the others do)

    def _rows_ready(self) -> None:
        """Every item of the cycle's samples holds a row now."""

    def _plan(self, new: int, buffered: int) -> list[tuple[int, int, int]]:
        return cycle_plan(new, self.cfg, self.cycles, buffered) if buffered else []

    def _gate_losses(self, lin: Lineage, gate_set: Columns) -> tuple[float, float] | None:
        """(candidate, served) log-loss on the held-out set; None when it is too small."""
        return self._held_out_losses(lin, gate_set) if gate_set.size >= 16 else None

    def _held_out_losses(self, lin: Lineage, cols: Columns) -> tuple[float, float]:
        cand, served = (logloss(cols.label, predict(m, cols, self.table, self.device))
                        for m in (lin.model, lin.served))
        return cand, served

    def _publish(self, lin: Lineage, model: FreshRecModel, times: tuple[int, int]
                 ) -> Published:
        return publish_version(self.store, self.table, lin, model, times, self.drift,
                               self.cfg.publish_max_layers)

    def step(self, lin: Lineage, batch: Batch, rows: np.ndarray) -> torch.Tensor:
        """One optimiser step, returning the loss as a device tensor.

        Reading the loss would wait for the GPU, so the next batch could not be prepared
        while this one computes: the cycle reads the sum once, at its end.
        """
        lin.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.device.type == "cuda"):
            logits = lin.model(batch.items, batch.history, batch.mask, self.table.semantic)
        logits = logits.float()
        # A sum over at least one: a rank's empty share adds a zero gradient, not a NaN.
        n = max(len(batch), 1)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="sum") / n
        if lin.kind == "distilled" and lin.teacher in self.lineages:
            teacher = torch.sigmoid(scores(self.lineages[lin.teacher].model, batch,
                                                self.table.semantic))
            w = self.cfg.distill_weight
            loss = (1 - w) * loss + w * F.binary_cross_entropy_with_logits(
                logits, teacher, reduction="sum") / n
        lin.step(loss, rows, lin.dense_cycle(self.cfg.warmup_cycles,
                                            self.cfg.dense_every_cycles))
        lin.model.eval()
        return loss.detach()

    def _gate_and_publish(self, lin: Lineage, gate_set: Columns, new_items: int,
                          times: tuple[int, int], fresh: list[Sample],
                          progressive: tuple[float, float],
                          train_loss: float | None) -> CycleReport:
        trained = train_loss is not None
        served_loss = cand_loss = float("nan")
        reason: str | None = None
        gated = trained and lin.published is not None
        losses = self._gate_losses(lin, gate_set) if gated else None
        if losses is not None:
            cand_loss, served_loss = losses
            if cand_loss > served_loss + self.cfg.gate_tolerance:
                reason = "gate"
        if not trained and new_items == 0 and lin.published is not None:
            reason = "frozen"
        published = Published(None, 0.0, None)
        if reason == "gate":
            # The candidate keeps its weights and optimiser state and trains on next cycle:
            # a noisy gate set costs one publish, not the cycle's learning. Only a
            # candidate rejected gate_max_rejections times in a row (diverging, not
            # unlucky) restarts from the served model.
            lin.rejected_in_a_row += 1
            if lin.rejected_in_a_row >= self.cfg.gate_max_rejections:
                log.warning("%s: candidate rejected %d times in a row; restarting it from "
                            "the served model", lin.name, lin.rejected_in_a_row)
                lin.revert()
        if reason is None or (reason == "gate" and new_items):
            # A rejected candidate is not published, but new catalog items still need
            # vectors: the served weights are republished with the new rows.
            model = lin.served if reason == "gate" else lin.model
            published = self._publish(lin, model, times)
            reason = reason or published.why_not
        if reason == "gate":
            outcome = CycleOutcome.REJECTED
        elif published.version is not None:
            outcome = CycleOutcome.PUBLISHED
            lin.rejected_in_a_row = 0
        else:
            outcome = CycleOutcome(reason) if reason else CycleOutcome.IDLE
        rejected_in_a_row = lin.rejected_in_a_row
        if lin.rejected_in_a_row >= self.cfg.gate_max_rejections:
            lin.rejected_in_a_row = 0
        return CycleReport(
            arm=lin.name, lineage=lin.kind, outcome=outcome, n_fresh=len(fresh),
            n_trained=len(fresh) if trained else 0, progressive_auc=progressive[0],
            progressive_logloss=progressive[1],
            train_loss=train_loss if train_loss is not None else float("nan"),
            gate_served_loss=served_loss, gate_candidate_loss=cand_loss,
            published_version=published.version, publish_s=published.seconds, duration_s=0.0,
            published_rows=published.rows, published_layers=published.layers,
            rejected_in_a_row=rejected_in_a_row)
