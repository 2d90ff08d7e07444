"""One model lineage (an experiment arm): candidate + served copies and their optimisers."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from worker.learning.model import FreshRecModel

__all__ = ["Lineage"]


class Lineage:
    """The candidate being trained, the served copy it must beat, and bookkeeping.

    Args:
        name: the arm name (metrics label, Redis namespace).
        kind: ``incremental`` (trains every cycle), ``frozen`` (trains only during warm-up),
            or ``distilled`` (a student that also learns from ``teacher``'s predictions).
        model: the candidate; the served copy starts identical.
        lr: learning rate of both optimisers.
    """

    def __init__(self, name: str, kind: str, model: FreshRecModel, lr: float,
                 teacher: str | None = None) -> None:
        self.name, self.kind, self.teacher = name, kind, teacher
        self.model = model
        self.served = copy.deepcopy(model).eval()
        self.lr = lr
        self.seq = 0  # published versions so far
        self.cycles = 0
        self.published: str | None = None
        self.rejected_in_a_row = 0  # gate rejections since the last publish
        self._build_optimisers()

    def _build_optimisers(self) -> None:
        self.opt_dense = torch.optim.Adam(self.model.dense_parameters(), lr=self.lr)
        self.opt_sparse = torch.optim.SparseAdam(self.model.sparse_parameters(), lr=self.lr)

    def trains(self, warmup_cycles: int) -> bool:
        """Whether this cycle updates weights (frozen lineages stop after warm-up)."""
        return self.kind != "frozen" or self.cycles < warmup_cycles

    def grow(self, rows: int) -> None:
        """Make room for ``rows`` items in both copies, keeping SparseAdam moments."""
        old_params = self.model.sparse_parameters()
        old_state = [self.opt_sparse.state.get(p, {}) for p in old_params]
        if not self.model.grow(rows):
            return
        self.served.grow(rows)
        self.opt_sparse = torch.optim.SparseAdam(self.model.sparse_parameters(), lr=self.lr)
        for param, state in zip(self.model.sparse_parameters(), old_state, strict=True):
            if state:
                self.opt_sparse.state[param] = {
                    "step": state["step"],
                    "exp_avg": _pad(state["exp_avg"], param.shape),
                    "exp_avg_sq": _pad(state["exp_avg_sq"], param.shape),
                }
        # Adam keys its state by parameter object; dense parameters did not change.

    def step(self, loss: torch.Tensor) -> None:
        """One optimiser step on both dense (Adam) and sparse (SparseAdam) parameters."""
        self.opt_dense.zero_grad(set_to_none=True)
        self.opt_sparse.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_dense.step()
        self.opt_sparse.step()

    def promote(self) -> None:
        """The candidate becomes the served model."""
        self.served.load_state_dict(self.model.state_dict())

    def revert(self) -> None:
        """Throw the candidate away: back to the served weights (moments restart)."""
        self.model.load_state_dict(self.served.state_dict())
        self._build_optimisers()

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Bookkeeping and both weight sets, for a checkpoint."""
        tensors = {f"{self.name}/model/{k}": v.detach().cpu().numpy()
                   for k, v in self.model.state_dict().items()}
        tensors.update({f"{self.name}/served/{k}": v.detach().cpu().numpy()
                        for k, v in self.served.state_dict().items()})
        return {"seq": self.seq, "cycles": self.cycles, "published": self.published,
                "rejected_in_a_row": self.rejected_in_a_row}, tensors

    def load(self, state: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` output; optimiser moments restart from zero."""
        self.seq, self.cycles = int(state["seq"]), int(state["cycles"])
        self.published = state["published"]
        self.rejected_in_a_row = int(state.get("rejected_in_a_row", 0))
        rows = tensors[f"{self.name}/model/collab.weight"].shape[0]
        self.grow(rows)
        for which, module in (("model", self.model), ("served", self.served)):
            prefix = f"{self.name}/{which}/"
            module.load_state_dict({k[len(prefix):]: torch.as_tensor(v)
                                    for k, v in tensors.items() if k.startswith(prefix)})
        self._build_optimisers()


def _pad(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    out = torch.zeros(shape, dtype=t.dtype, device=t.device)
    out[: t.shape[0]] = t
    return out
