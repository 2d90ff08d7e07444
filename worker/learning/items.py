"""The item table shared by every lineage: id -> row, and each row's semantic vector."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from consumers.columns import RowIndex

__all__ = ["ItemTable"]


class ItemTable:
    """Stable rows for item ids, plus the frozen text-encoder vector of each row.

    A row keeps its item while the item is live (an evicted item's row is reset, then
    reused: see :class:`consumers.columns.RowIndex`), so a model's embedding row keeps
    meaning the same item across cycles and checkpoints. Items seen in events before their
    catalog text have a zero semantic vector (``has_text`` False) until the text arrives.
    """

    def __init__(self, text_dim: int, device: torch.device | None = None,
                 index: RowIndex | None = None) -> None:
        self.text_dim = text_dim
        self.device = device or torch.device("cpu")
        # Shared with the replay buffers, which give ids their rows at join time.
        self.index = RowIndex() if index is None else index
        self.semantic = torch.zeros(1024, text_dim, device=self.device)
        self.has_text = np.zeros(1024, bool)
        # Text epochs: each set_semantic call is one; a row remembers the last that wrote
        # it, so a publish finds the rows whose text changed since its parent in one scan.
        self.epoch = 0
        self.text_epoch = np.zeros(1024, np.int64)
        self.sync()

    @property
    def ids(self) -> list[str]:
        """Item ids in row order."""
        return self.index.ids

    @property
    def rows(self) -> dict[str, int]:
        """Item id -> row."""
        return self.index.rows

    def __len__(self) -> int:
        return len(self.index)

    def attach(self, index: RowIndex) -> None:
        """Share ``index`` (e.g. the replay buffers'); ours must be a prefix of it."""
        if index is self.index:
            return
        if index.ids[: len(self.index)] != self.index.ids:
            raise ValueError("item rows disagree: cannot share this row index")
        self.index = index
        self.sync()

    def sync(self) -> None:
        """Grow the semantic table to every row the index has handed out."""
        if len(self.index) > self.capacity:
            self._grow(len(self.index))

    @property
    def capacity(self) -> int:
        """Allocated rows (grows by doubling)."""
        return int(self.semantic.shape[0])

    def ensure(self, item_ids: Iterable[str]) -> None:
        """Give every unseen id a row."""
        self.index.extend(item_ids)
        self.sync()

    def lookup(self, item_ids: Sequence[str]) -> list[int]:
        """Rows of ids that must already have been :meth:`ensure`-d."""
        rows = self.rows
        return [rows[i] for i in item_ids]

    def set_semantic(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store the text vectors of ``item_ids`` (rows are created if needed)."""
        self.ensure(item_ids)
        idx = self.lookup(item_ids)
        self.semantic[idx] = torch.as_tensor(vectors, dtype=torch.float32, device=self.device)
        self.has_text[idx] = True
        self.epoch += 1
        self.text_epoch[idx] = self.epoch

    def text_changed_since(self, epoch: int, n: int) -> np.ndarray:
        """Rows below ``n`` whose text was set after ``epoch``."""
        return np.flatnonzero(self.text_epoch[:n] > epoch)

    def _grow(self, need: int) -> None:
        cap = self.capacity
        while cap < need:
            cap *= 2
        semantic = torch.zeros(cap, self.text_dim, device=self.device)
        semantic[: self.capacity] = self.semantic
        has_text = np.zeros(cap, bool)
        has_text[: self.capacity] = self.has_text
        text_epoch = np.zeros(cap, np.int64)
        text_epoch[: self.capacity] = self.text_epoch
        self.semantic, self.has_text, self.text_epoch = semantic, has_text, text_epoch

    def state(self, since: tuple[int, int] | None = None
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Ids and arrays to checkpoint (``items/rows`` says which rows the arrays hold).

        ``since`` = (creation mark, text epoch) of an earlier checkpoint: only the rows
        given to an item or re-encoded after it.
        """
        self.sync()  # the shared index may have handed out rows since the last cycle
        index = self.index
        n = len(index)
        if since is None:
            rows = np.arange(n)
            state: dict[str, Any] = {"ids": list(index.ids)}
        else:
            new = index.created_since(since[0])
            rows = np.union1d(self.text_changed_since(since[1], n), new)
            state = {"rows": new.tolist(), "ids": [index.ids[r] for r in new]}
        state.update(epoch=self.epoch, clock=index.clock)
        return state, {"items/rows": rows.astype(np.int64),
                       "items/semantic": self.semantic[rows].cpu().numpy(),
                       "items/has_text": self.has_text[rows].astype(np.uint8)}

    def marks(self) -> tuple[int, int]:
        """(creation mark, text epoch) now: what :meth:`state` of a later delta starts after."""
        return self.index.clock, self.epoch

    def forget(self, rows: np.ndarray) -> None:
        """Evicted rows: no text until a new item gets the row and its text arrives."""
        self.sync()  # ingestion may have handed out rows since the last cycle
        self.semantic[torch.as_tensor(rows, dtype=torch.long, device=self.device)] = 0.0
        self.has_text[rows] = False

    def load(self, state: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned (a delta: on top of what it builds on).

        A shared index restored from the same checkpoint already holds the ids; an index
        that disagrees is replaced (or updated) by them.
        """
        index, clock = self.index, int(state.get("clock", 0))
        if "rows" in state:
            if [index.ids[r] if r < len(index) else None for r in state["rows"]] != state["ids"]:
                index.assign(state["rows"], state["ids"], clock)
        else:
            if index.ids != state["ids"]:
                index.reset(state["ids"], clock)
            self.semantic = torch.zeros(1024, self.text_dim, device=self.device)
            self.has_text = np.zeros(1024, bool)
            self.text_epoch = np.zeros(1024, np.int64)
        self.sync()
        rows = tensors["items/rows"]
        self.semantic[rows] = torch.as_tensor(tensors["items/semantic"], device=self.device)
        self.has_text[rows] = tensors["items/has_text"].astype(bool)
        # Restored text counts as old: a lineage's first publish after a restore is full
        # anyway, and a later delta checkpoint needs only texts set after this.
        self.text_epoch[:] = 0
        self.epoch = int(state.get("epoch", 0))
