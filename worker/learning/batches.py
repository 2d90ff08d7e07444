"""Samples -> tensors: item rows, padded history rows with a mask, labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from consumers.events import Sample
from worker.learning.items import ItemTable

__all__ = ["Batch", "make_batch"]


@dataclass
class Batch:
    """One mini-batch on the training device."""

    items: torch.Tensor  # (B,) int64 rows
    history: torch.Tensor  # (B, H) int64 rows, 0 where padded
    mask: torch.Tensor  # (B, H) float 1/0
    labels: torch.Tensor  # (B,) float

    def __len__(self) -> int:
        return int(self.items.shape[0])


def make_batch(samples: Sequence[Sample], table: ItemTable, device: torch.device) -> Batch:
    """Tensorise ``samples``; unseen item ids get rows first. Pinned + async copy on CUDA."""
    table.ensure(s.item_id for s in samples)
    table.ensure(i for s in samples for i in s.history)
    rows = table.rows
    width = max((len(s.history) for s in samples), default=0) or 1
    hist = [[rows[i] for i in s.history] + [0] * (width - len(s.history)) for s in samples]
    mask = [[1.0] * len(s.history) + [0.0] * (width - len(s.history)) for s in samples]
    pin = device.type == "cuda"
    cpu = (torch.tensor([rows[s.item_id] for s in samples], dtype=torch.int64),
           torch.tensor(hist, dtype=torch.int64), torch.tensor(mask, dtype=torch.float32),
           torch.tensor([float(s.label) for s in samples], dtype=torch.float32))
    if pin:
        cpu = tuple(t.pin_memory() for t in cpu)  # type: ignore[assignment]
    items, history, mask_t, labels = (t.to(device, non_blocking=pin) for t in cpu)
    return Batch(items, history, mask_t, labels)
