"""Scoring without learning: for progressive validation, the gate and a student's teacher."""

from __future__ import annotations

import numpy as np
import torch

from consumers.columns import Columns
from worker.learning.batches import Batch, batch_from_rows
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


def predict(model: FreshRecModel, cols: Columns, table: ItemTable, device: torch.device
            ) -> np.ndarray:
    """Click probabilities of the samples in ``cols``, in batches of 4,096.

    Columns, not samples: the rows were found once, when the samples were buffered, so
    scoring a cycle's samples twice per lineage costs no string lookups.
    """
    table.sync()
    probs = [np.zeros(0, np.float32)]
    for start in range(0, cols.size, 4096):
        part = slice(start, start + 4096)
        batch = batch_from_rows(cols.item[part], cols.hist[part], cols.label[part], device)
        probs.append(torch.sigmoid(scores(model, batch, table.semantic)).cpu().numpy())
    return np.concatenate(probs)
