"""Scoring without learning: for progressive validation, the gate and a student's teacher."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from consumers.events import Sample
from worker.learning.batches import Batch, make_batch
from worker.learning.items import ItemTable
from worker.learning.model import FreshRecModel

__all__ = ["predict", "scores"]


@torch.no_grad()
def scores(model: FreshRecModel, batch: Batch, semantic: torch.Tensor) -> torch.Tensor:
    """Logits of ``batch`` (bfloat16 autocast on CUDA, float32 out)."""
    device = semantic.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits: torch.Tensor = model(batch.items, batch.history, batch.mask, semantic)
        return logits.float()


def predict(model: FreshRecModel, samples: Sequence[Sample], table: ItemTable,
            device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(click probabilities, labels) of ``samples``, in batches of 4,096."""
    probs, labels = [], []
    for start in range(0, len(samples), 4096):
        batch = make_batch(samples[start:start + 4096], table, device)
        probs.append(torch.sigmoid(scores(model, batch, table.semantic)).cpu().numpy())
        labels.append(batch.labels.cpu().numpy())
    return np.concatenate(probs), np.concatenate(labels)
