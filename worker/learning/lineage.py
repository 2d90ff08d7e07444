"""One model lineage (an experiment arm): candidate + served copies and their optimisers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from worker.learning.model import FreshRecModel
from worker.learning.row_adam import RowAdam

__all__ = ["GradSyncFn", "Lineage"]

#: Averages a replica's gradients across trainer ranks and returns the rows every rank's
#: batch looked up (see :class:`worker.learning.distributed.GradSync`).
GradSyncFn = Callable[[FreshRecModel, np.ndarray], np.ndarray]


class Lineage:
    """The candidate being trained, the served copy it must beat, and bookkeeping.

    Args:
        name: the arm name (metrics label, Redis namespace).
        kind: ``incremental`` (trains every cycle), ``frozen`` (trains only during warm-up),
            or ``distilled`` (a student that also learns from ``teacher``'s predictions).
        model: the candidate; the served copy starts identical.
        lr: learning rate of the dense parameters (Adam).
        sparse_lr: learning rate of the item rows (:class:`RowAdam`); ``lr`` if None.
    """

    def __init__(self, name: str, kind: str, model: FreshRecModel, lr: float,
                 teacher: str | None = None, sparse_lr: float | None = None) -> None:
        self.name, self.kind, self.teacher = name, kind, teacher
        self.model = model
        self.served = copy.deepcopy(model).eval()
        self.lr = lr
        self.sparse_lr = lr if sparse_lr is None else sparse_lr
        self.seq = 0  # published versions so far
        self.cycles = 0
        self.published: str | None = None
        self.rejected_in_a_row = 0  # gate rejections since the last publish
        # Delta publishing. The served copy is what ``delta_base`` holds (it was published
        # from it, or promoted to it); the candidate differs from it in ``touched`` rows,
        # and everywhere if ``dense_changed``. Rows given to an item or re-encoded since the
        # base are found from the row index's creation mark ``base_clock`` and the item
        # table's text epoch ``base_epoch``.
        self.delta_base: str | None = None  # None: the next publish is a full one
        self.base_layers = 0  # layers delta_base reads (1: a full version)
        self.base_clock = 0
        self.base_epoch = 0
        self.touched = np.zeros(model.capacity, bool)
        self.dense_changed = False
        # Checkpoint marks: each change to sparse rows (a step, a promote, a revert) takes
        # the next stamp, and a row remembers the last that changed it in either copy.
        self.stamp = 0
        self.row_stamp = np.zeros(model.capacity, np.int64)
        self.sync: GradSyncFn | None = None  # set when trainer ranks share each step
        self._build_optimisers()

    def _build_optimisers(self) -> None:
        self.opt_dense = torch.optim.Adam(self.model.dense_parameters(), lr=self.lr)
        self.opt_sparse = RowAdam(self.model.sparse_parameters(), lr=self.sparse_lr)

    def trains(self, warmup_cycles: int) -> bool:
        """Whether this cycle updates weights (frozen lineages stop after warm-up)."""
        return self.kind != "frozen" or self.cycles < warmup_cycles

    def dense_cycle(self, warmup_cycles: int, every: int) -> bool:
        """Whether this cycle trains the dense parameters every item row depends on.

        Sparse rows (each item's collaborative vector and bias) learn every cycle; the
        dense ones (text projection, mixing weight, global bias) during warm-up and then
        every ``every`` cycles. Between those, a version changes only the rows that were
        trained, new or re-encoded, and is published as a delta. Dense parameters drift
        slowly, so production systems sync them less often than sparse ones (Monolith,
        Liu et al. 2022, syncs sparse rows by the minute and dense ones by the day).
        """
        return self.cycles < warmup_cycles or self.cycles % every == 0

    def grow(self, rows: int) -> None:
        """Make room for ``rows`` items in both copies, keeping the rows' moments."""
        if not self.model.grow(rows):
            return
        self.served.grow(rows)
        grown = self.model.capacity - len(self.touched)
        self.touched = np.concatenate([self.touched, np.zeros(grown, bool)])
        self.row_stamp = np.concatenate([self.row_stamp, np.zeros(grown, np.int64)])
        # The new rows' initial values go into the next delta checkpoint (a restore grows
        # in one step, which would draw different noise).
        self._stamp(np.arange(len(self.row_stamp) - grown, len(self.row_stamp)))
        old, self.opt_sparse = self.opt_sparse, RowAdam(self.model.sparse_parameters(),
                                                        lr=self.sparse_lr)
        self.opt_sparse.adopt(old, self.model.sparse_parameters())
        # Adam keys its state by parameter object; dense parameters did not change.

    def step(self, loss: torch.Tensor, rows: np.ndarray, dense: bool = True) -> None:
        """One optimiser step on the sparse rows and the dense parameters.

        ``rows``: every item row the batch looked up (their sparse rows move, even those
        with a zero gradient: their momentum). ``dense`` False leaves the
        parameters every row depends on as they are, so only ``rows`` change. With
        :attr:`sync` set (several trainer ranks), the gradients are averaged over the ranks
        first and every rank's rows count as touched.
        """
        self.opt_dense.zero_grad(set_to_none=True)
        self.opt_sparse.zero_grad(set_to_none=True)
        loss.backward()
        if dense:
            self.dense_changed = True
        else:
            for param in self.model.row_parameters():
                param.grad = None  # Adam skips a parameter without a gradient
        if self.sync is not None:
            rows = self.sync(self.model, rows)
        self.opt_dense.step()
        self.opt_sparse.step()
        self.touched[rows] = True
        self._stamp(rows)

    def _stamp(self, rows: np.ndarray) -> None:
        self.stamp += 1
        self.row_stamp[rows] = self.stamp

    def changed_rows(self, candidate: bool, new: np.ndarray, n: int) -> np.ndarray | None:
        """Rows a version of the candidate (or of the served copy) changes over delta_base.

        None when every row may have changed: no base, or the candidate's dense
        parameters moved. ``new``: rows given to an item or re-encoded since the base.
        """
        if self.delta_base is None or (candidate and self.dense_changed):
            return None
        parts = [new]
        if candidate:
            parts.append(np.flatnonzero(self.touched[:n]))
        return np.unique(np.concatenate(parts))

    def published_as(self, version: str, seq: int, layers: int, clock: int, epoch: int) -> None:
        """``version`` (reading ``layers`` layers) is now the delta base."""
        self.seq = seq
        self.published = self.delta_base = version
        self.base_layers, self.base_clock, self.base_epoch = layers, clock, epoch

    def forget(self, rows: np.ndarray) -> None:
        """Evicted rows start over, in both copies and the optimiser's moments.

        The next version is a full one: a delta cannot drop the evicted items.
        """
        self.model.reset_rows(rows, self.stamp)
        self.served.reset_rows(rows, self.stamp)
        self.opt_sparse.reset_rows(torch.as_tensor(rows, dtype=torch.long))
        self.touched[rows] = False
        self._stamp(rows)
        self.delta_base = None

    def seed_rows(self, rows: np.ndarray, salt: int) -> None:
        """New rows start from noise keyed by ``salt`` (the same on every trainer rank)."""
        self.model.reset_rows(rows, salt)
        self.served.reset_rows(rows, salt)

    def promote(self) -> None:
        """The candidate becomes the served model."""
        self.served.load_state_dict(self.model.state_dict())
        self._stamp(np.flatnonzero(self.touched))
        self.touched[:] = False
        self.dense_changed = False

    def revert(self) -> None:
        """Throw the candidate away: back to the served weights (moments restart)."""
        self.model.load_state_dict(self.served.state_dict())
        self._stamp(np.flatnonzero(self.touched))
        self.touched[:] = False
        self.dense_changed = False
        self._build_optimisers()

    def state(self, since: int | None = None, new: np.ndarray | None = None
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Bookkeeping and both weight sets, for a checkpoint.

        ``since``: the stamp at an earlier checkpoint, ``new`` the rows given to an item
        after it. The sparse tables then hold only rows changed or new since
        (``<table>@rows`` lists them); the dense parameters are small and always whole.
        """
        sparse = {"collab.weight", "item_bias.weight", "ctx.weight"}
        rows = None
        if since is not None:
            rows = np.union1d(np.flatnonzero(self.row_stamp > since),
                              np.zeros(0, np.int64) if new is None else new)
            rows = rows[rows < self.model.capacity]  # past it: not grown to yet
        tensors: dict[str, np.ndarray] = {}
        for which, module in (("model", self.model), ("served", self.served)):
            for key, value in module.state_dict().items():
                name = f"{self.name}/{which}/{key}"
                if rows is not None and key in sparse:
                    tensors[name + "@rows"] = rows.astype(np.int64)
                    tensors[name] = value[torch.as_tensor(rows, device=value.device)].cpu().numpy()
                else:
                    tensors[name] = value.detach().cpu().numpy()
        return {"seq": self.seq, "cycles": self.cycles, "published": self.published,
                "rejected_in_a_row": self.rejected_in_a_row, "capacity": self.model.capacity,
                "stamp": self.stamp}, tensors

    def load(self, state: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` output (a delta: over what it builds on).

        Optimiser moments restart from zero. A parameter the checkpoint lacks (written by
        a model without it, e.g. before the user tower) keeps its initial value.
        """
        self.seq, self.cycles = int(state["seq"]), int(state["cycles"])
        self.published = state["published"]
        self.rejected_in_a_row = int(state.get("rejected_in_a_row", 0))
        self.grow(int(state.get("capacity", 0)) or
                  tensors[f"{self.name}/model/collab.weight"].shape[0])
        for which, module in (("model", self.model), ("served", self.served)):
            prefix = f"{self.name}/{which}/"
            current = module.state_dict()
            for key, value in current.items():
                if prefix + key not in tensors:
                    continue  # a parameter the checkpoint's model did not have: its start
                saved = tensors[prefix + key]
                rows = tensors.get(prefix + key + "@rows")
                with torch.no_grad():
                    if rows is None:
                        value.copy_(torch.as_tensor(saved).reshape(value.shape))
                    else:
                        value[torch.as_tensor(rows, device=value.device)] = torch.as_tensor(
                            saved, device=value.device)
        self._build_optimisers()
        # What changed since the last publish is not in the checkpoint: publish in full.
        self.delta_base = None
        self.touched[:] = False
        self.dense_changed = False
        self.row_stamp[:] = 0
        self.stamp = int(state.get("stamp", 0))

