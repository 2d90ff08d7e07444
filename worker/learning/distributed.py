"""Data-parallel trainer ranks over torch.distributed: every rank takes the same step.

Each rank computes the loss of its own share of a batch. Before the optimisers step, the
dense gradients are averaged with one all-reduce, and the sparse ones (the collaborative
rows and biases the shares looked up) are all-gathered, summed row by row and averaged.
Every rank then applies the same gradient to the same parameters, so the replicas stay
identical without ever being broadcast, and equal (up to the order of float sums) to one
process training on the whole batch, since each share's loss is a mean over an equal
number of samples. The sparse exchange is proportional to the rows a batch touched, not
to the catalog (an all-reduce of the whole embedding table would move every row each
step). Works with gloo on CPU and NCCL on GPUs; one process needs none of it.

The rows a step touched cross ranks too: SparseAdam moves exactly the rows in the summed
gradient, and delta publishing and checkpoints follow the touched rows, so every rank
must mark the same ones.

Ranks that number their item rows each in their own order (each hands rows out as its
own samples arrive) exchange rows through a :class:`RowMap`: rows go out as the global
rows every rank agreed on and come back as the receiver's own.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from worker.learning.model import FreshRecModel

__all__ = ["GradSync", "RowMap"]


class RowMap(Protocol):
    """This rank's item rows <-> the global rows every rank agreed on."""

    def to_global(self, rows: np.ndarray) -> np.ndarray:
        """The global rows of these local ones."""

    def to_local(self, rows: np.ndarray) -> np.ndarray:
        """The local rows of these global ones."""


class GradSync:
    """Averages a replica's gradients across the ranks of ``group`` (see module doc).

    Call it between ``loss.backward()`` and the optimiser steps, on every rank, with the
    rows this rank's share looked up; it returns the rows every rank's shares looked up.
    """

    def __init__(self, group: dist.ProcessGroup | None = None,
                 rows: RowMap | None = None) -> None:
        self.group = group
        self.world = dist.get_world_size(group)
        self.rows = rows

    def __call__(self, model: FreshRecModel, rows: np.ndarray) -> np.ndarray:
        """Average ``model``'s gradients over the ranks; the rows every rank looked up."""
        dense = [p.grad for p in model.dense_parameters() if p.grad is not None]
        if dense:  # one flat all-reduce instead of one per parameter
            flat = torch.cat([g.reshape(-1) for g in dense])
            dist.all_reduce(flat, group=self.group)
            flat /= self.world
            offset = 0
            for g in dense:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        for param in model.sparse_parameters():
            # Every rank gathers for every sparse table, an empty share included.
            param.grad = self._sparse_mean(param.grad, param)
        union = self._gather(torch.as_tensor(self._out(np.asarray(rows, np.int64))))
        return np.unique(self._in(union.numpy()))

    def _sparse_mean(self, grad: torch.Tensor | None, param: torch.Tensor) -> torch.Tensor:
        if grad is None:
            grad = torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.long),
                                           torch.zeros((0, *param.shape[1:])),
                                           param.shape).to(param.device)
        local = grad.coalesce()
        out = torch.as_tensor(self._out(local.indices()[0].cpu().numpy()))
        idx = torch.as_tensor(self._in(self._gather(out).numpy()), device=param.device)
        values = self._gather(local.values())
        total = torch.sparse_coo_tensor(idx.unsqueeze(0), values, param.shape,
                                        check_invariants=False).coalesce()
        return total / self.world

    def _out(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.rows is None else self.rows.to_global(rows)

    def _in(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.rows is None else self.rows.to_local(rows)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x`` (lengths may differ), concatenated in rank order, on x's device."""
        wire = x.to(self.wire())
        sizes = [torch.zeros(1, dtype=torch.int64, device=wire.device)
                 for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([len(x)], device=wire.device), group=self.group)
        counts = [int(s.item()) for s in sizes]
        padded = torch.zeros((max(counts), *x.shape[1:]), dtype=x.dtype, device=wire.device)
        padded[: len(x)] = wire
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]).to(x.device)

    def wire(self) -> torch.device:
        """NCCL moves CUDA tensors only; gloo moves CPU tensors."""
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
