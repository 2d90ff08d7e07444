"""What a trainer's checkpoint holds, and the versions it serves: kept apart from the cycle.

A mixin of :class:`worker.learning.training.Trainer`: the item table, the lineages and the
cycle count are written whole or as a delta since the marks of an earlier checkpoint, and
restored over what they build on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_store.base import VectorStore
from worker.learning.items import ItemTable
from worker.learning.lineage import Lineage

__all__ = ["TrainerState"]


class TrainerState:
    """Checkpoint state and served versions of a trainer's lineages."""

    table: ItemTable
    store: VectorStore
    lineages: dict[str, Lineage]
    cycles: int

    def served_versions(self) -> dict[str, str | None]:
        """Each arm's current version in the store: after a rollback, not the last publish."""
        out: dict[str, str | None] = {}
        for name in self.lineages:
            info = self.store.current(name)
            out[name] = info.version if info is not None else None
        return out

    def marks(self) -> dict[str, int]:
        """Where the growing state stands: what a later delta checkpoint starts after."""
        clock, epoch = self.table.marks()
        return {"clock": clock, "epoch": epoch,
                **{f"stamp:{name}": lin.stamp for name, lin in self.lineages.items()}}

    def state(self, since: dict[str, int] | None = None
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Item table, lineages and bookkeeping: whole, or what changed since ``since``."""
        marks = None if since is None else (since["clock"], since["epoch"])
        items, tensors = self.table.state(marks)
        new = None if since is None else self.table.index.created_since(since["clock"])
        lineages = {}
        for name, lin in self.lineages.items():
            mark = None if since is None else since.get(f"stamp:{name}", -1)
            lineages[name], lin_tensors = lin.state(mark, new)
            tensors.update(lin_tensors)
        return {"items": items, "lineages": lineages, "cycles": self.cycles}, tensors

    def forget(self, rows: np.ndarray) -> None:
        """Rows of evicted items start over (call while no cycle runs)."""
        self.table.forget(rows)
        for lin in self.lineages.values():
            lin.grow(len(self.table))
            lin.forget(rows)

    def load(self, state: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` (a delta: over what it builds on).

        Lineages not in the checkpoint start fresh.
        """
        self.table.load(state["items"], tensors)
        self.cycles = int(state["cycles"])
        for name, lin in self.lineages.items():
            if name in state["lineages"]:
                lin.load(state["lineages"][name], tensors)
