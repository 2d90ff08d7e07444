"""Samples -> tensors: item rows, padded history rows with a mask, labels.

Two ways in. :func:`batch_from_rows` takes integer columns (the replay buffers keep them,
written once at join time) and makes one pinned host-to-device copy: the fast path every
training step uses. :func:`make_batch` converts ``Sample`` objects (a cycle's new samples,
the gate set), looping over their string ids in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from consumers.columns import HOLDOUT_BUCKETS, SampleRows, holdout_bucket
from consumers.events import Sample
from worker.config import TrainingSettings
from worker.learning.items import ItemTable

__all__ = ["Batch", "batch_from_rows", "concat", "cycle_plan", "is_holdout",
           "make_batch", "stack_history"]


@dataclass
class Batch:
    """One mini-batch on the training device."""

    items: torch.Tensor  # (B,) int64 rows
    history: torch.Tensor  # (B, H) int64 rows, 0 where padded
    mask: torch.Tensor  # (B, H) float 1/0
    labels: torch.Tensor  # (B,) float

    def __len__(self) -> int:
        return int(self.items.shape[0])


def batch_from_rows(items: np.ndarray, history: np.ndarray, labels: np.ndarray,
                    device: torch.device) -> Batch:
    """A batch from integer columns (history padded with -1), in one host-to-device copy.

    The columns are packed into one int32 block ``[item, label, history...]``, copied once
    (pinned and asynchronous on CUDA), and split, masked and widened on the device.
    """
    width = history.shape[1] if history.ndim == 2 else 0
    cuda = device.type == "cuda"
    # Written straight into pinned memory (cached by torch's host allocator): no extra copy.
    host = torch.empty((len(items), 2 + width), dtype=torch.int32, pin_memory=cuda)
    block = host.numpy()
    block[:, 0] = items
    block[:, 1] = labels
    if width:
        block[:, 2:] = history
    dev = host.to(device, non_blocking=cuda)
    hist = dev[:, 2:] if width else torch.zeros((len(items), 1), dtype=torch.int32,
                                                  device=device) - 1
    valid = hist >= 0
    return Batch(dev[:, 0].long(), hist.clamp(min=0).long(), valid.float(),
                 dev[:, 1].float())


def concat(a: Batch, b: Batch) -> Batch:
    """One batch of both (histories padded to the wider one)."""
    width = max(a.history.shape[1], b.history.shape[1])

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    return Batch(torch.cat([a.items, b.items]), torch.cat([pad(a.history), pad(b.history)]),
                 torch.cat([pad(a.mask), pad(b.mask)]), torch.cat([a.labels, b.labels]))


def is_holdout(request_id: str, share: float) -> bool:
    """Deterministic split by request: held-out requests are never trained on."""
    return holdout_bucket(request_id) < int(share * HOLDOUT_BUCKETS)


def stack_history(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of both history blocks, padded with -1 to the wider one."""
    width = max(a.shape[1], b.shape[1])
    out = np.full((len(a) + len(b), width), -1, np.int32)
    out[: len(a), : a.shape[1]] = a
    out[len(a):, : b.shape[1]] = b
    return out


def make_batch(samples: Sequence[Sample], table: ItemTable, device: torch.device) -> Batch:
    """Tensorise ``samples``; unseen item ids get rows first."""
    cols = SampleRows.of(samples, table.index)
    table.sync()
    return batch_from_rows(cols.item, cols.hist, cols.label, device)


def cycle_plan(new: int, cfg: TrainingSettings, cycles_done: int = 0,
               buffered: int | None = None) -> list[tuple[int, int, int]]:
    """Steps of a cycle over ``new`` trainable samples: (new from, new to, replay rows) each.

    Every new sample is trained on once, with ``replay_ratio`` replay rows per new row in
    its batch (``batch_size`` rows at most), so the replay a cycle does grows with what is
    new: a quiet cycle does not replay the buffers many times over and overfit their rarely
    seen items. ``steps_per_cycle`` is a minimum made up with full replay batches
    (``warmup_steps_per_cycle`` while fewer than ``warmup_cycles`` are done: a model
    learning from scratch needs passes, though no more than one over the ``buffered``
    samples a cycle, which would overfit a young buffer of many rare items). Past
    ``max_steps_per_cycle`` the rest of a backlog is learnt through the recent window.
    """
    per = max(1, int(cfg.batch_size / (1 + cfg.replay_ratio)))
    warm = cfg.warmup_steps_per_cycle if cycles_done < cfg.warmup_cycles else 0
    if buffered is not None:
        warm = min(warm, math.ceil(buffered / cfg.batch_size))
    least = max(cfg.steps_per_cycle, warm)
    steps = max(least, math.ceil(new / per))
    if cfg.max_steps_per_cycle:
        steps = min(steps, max(cfg.max_steps_per_cycle, least))
    plan = []
    for k in range(steps):
        lo, hi = min(k * per, new), min((k + 1) * per, new)
        room = cfg.batch_size - (hi - lo)
        plan.append((lo, hi, min(room, math.ceil(cfg.replay_ratio * (hi - lo))) if hi > lo
                     else room))
    return plan
