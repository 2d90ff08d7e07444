"""Trainer ranks in lockstep: data-parallel cycles over torch.distributed, rank 0 publishes.

``freshrec run --role train`` started by ``torchrun`` (or any launcher that sets
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) runs one
:class:`RankedTrainer` per rank. Each rank reads its own share of the samples topic's
partitions and the whole catalog, and the ranks agree on everything a cycle decides:

- **when**: a cycle starts when any rank finds one due (an all-reduce per poll);
- **which rows**: each rank numbers item rows in the order its own samples bring them, so
  at the start of each cycle the ranks exchange the ids they have seen since the last one
  and append the unseen ones to one global numbering (:class:`GlobalRows`), in rank order.
  Every rank then holds every item, and gradients cross ranks as global rows. A new row
  starts from noise keyed by its global row, so it starts equal everywhere;
- **how many steps**: the longest plan of any rank; a rank with fewer new samples tops
  its extra steps up from its replay buffers;
- **the gate**: log-loss sums and counts on every rank's held-out samples are added up,
  so all ranks take the same decision on the same figures;
- **the publish**: rank 0 writes the version; the others apply the same bookkeeping
  (promotion, delta base) to a store that keeps nothing, and only if rank 0 published.

At the first cycle (a fresh start or a restart from per-rank checkpoints that may be a
cycle or two apart) rank 0's parameters and counters are broadcast by global row, so the
replicas start identical. The gradients are averaged (:class:`GradSync`), so they stay so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from consumers.columns import Columns
from model_store.base import VectorStore, VersionInfo
from worker.learning.distributed import GradSync
from worker.learning.feed import SampleFeed
from worker.learning.lineage import Lineage
from worker.learning.model import FreshRecModel
from worker.learning.publishing import Published
from worker.learning.training import Trainer

__all__ = ["FollowerStore", "GlobalRows", "RankedTrainer", "Ranks"]

log = logging.getLogger(__name__)

#: How Published.why_not travels from rank 0 (its index; -1: published).
_WHY = ("unavailable", "pinned")


class Ranks:
    """This process's place among the trainer ranks, and the small agreements they make.

    The agreements run on a gloo group of their own (CPU scalars, whatever the gradient
    backend), so they never interleave with the gradient collectives.
    """

    def __init__(self, rank: int, world: int, control: dist.ProcessGroup | None = None) -> None:
        self.rank, self.world, self.control = rank, world, control

    @classmethod
    def from_env(cls, device: torch.device, timeout_s: float = 600.0) -> Ranks | None:
        """Join the process group torchrun describes; None when ``WORLD_SIZE`` is 1 or unset."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        control = dist.new_group(backend="gloo")
        log.info("trainer rank %d of %d (%s)", dist.get_rank(), world, dist.get_backend())
        return cls(dist.get_rank(), world, control)

    @staticmethod
    def leave() -> None:
        """Leave the process group, if this process joined one (a no-op otherwise).

        A process that exits with gloo's threads still running is aborted by the C++
        runtime ("terminate called without an active exception", SIGABRT): a clean stop
        would report a crash.
        """
        if dist.is_available() and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    def _reduce(self, values: Sequence[float], op: Any) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t, op=op, group=self.control)
        return [float(v) for v in t]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any."""
        return self._reduce([float(flag)], dist.ReduceOp.MAX)[0] > 0

    def max(self, n: int) -> int:
        """The largest ``n`` of any rank."""
        return int(self._reduce([n], dist.ReduceOp.MAX)[0])

    def sums(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def first(self, value: int) -> int:
        """Rank 0's ``value``, on every rank."""
        t = torch.tensor([value], dtype=torch.int64)
        dist.broadcast(t, 0, group=self.control)
        return int(t[0])

    def gather(self, ids: list[str]) -> list[list[str]]:
        """Every rank's list, in rank order."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, ids, group=self.control)
        return out


class GlobalRows:
    """Item rows every rank agrees on, and this rank's own row for each (see module doc)."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self._global = np.full(0, -1, np.int64)  # local row -> global row
        self._local = np.zeros(0, np.int64)  # global row -> local row

    def __len__(self) -> int:
        return len(self._local)

    def unseen(self, per_rank: list[list[str]]) -> list[str]:
        """Ids new to the numbering, in rank order then each rank's order, once each."""
        out: list[str] = []
        for ids in per_rank:
            for item_id in ids:
                if item_id not in self.known:
                    self.known.add(item_id)
                    out.append(item_id)
        return out

    def add(self, ids: list[str], local: np.ndarray) -> int:
        """Number ``ids`` (held at ``local`` rows here) next; returns the first global row."""
        start = len(self)
        self.known.update(ids)
        self._local = np.concatenate([self._local, local.astype(np.int64)])
        need = int(local.max()) + 1 if len(local) else 0
        if need > len(self._global):
            grown = np.full(max(need, 2 * len(self._global)), -1, np.int64)
            grown[: len(self._global)] = self._global
            self._global = grown
        self._global[local] = np.arange(start, start + len(ids))
        return start

    def to_global(self, rows: np.ndarray) -> np.ndarray:
        """Global rows of local ones; a local row no rank has agreed on is a bug, so raises."""
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.max() >= len(self._global) or (self._global[rows] < 0).any()):
            raise RuntimeError("an item row was used before the ranks agreed on it")
        out: np.ndarray = self._global[rows]
        return out

    def to_local(self, rows: np.ndarray) -> np.ndarray:
        """This rank's rows of global ones."""
        return self._local[np.asarray(rows, np.int64)]


class FollowerStore:
    """A rank other than 0 publishes here: nothing is written; reads go to the real store."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def publish(self, arm: str, version: str, ids: Sequence[str], vectors: np.ndarray,
                info: VersionInfo, parent: str | None = None) -> None:
        """Keep nothing: rank 0 has written the same version."""

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """The real store's vectors."""
        return self.store.lookup(arm, ids)

    def current(self, arm: str) -> VersionInfo | None:
        """The real store's current version."""
        return self.store.current(arm)

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """The real store's record of ``version``."""
        return self.store.info(arm, version)

    def versions(self, arm: str) -> list[str]:
        """None: a follower numbers versions by its own count, as rank 0 did before writing."""
        return []

    def rollback(self, arm: str) -> str:
        """Refused: operators roll back through rank 0's store."""
        raise RuntimeError("a follower rank does not roll back")

    def unpin(self, arm: str) -> None:
        """Refused, as rollback."""
        raise RuntimeError("a follower rank does not unpin")

    def all_vectors(self, arm: str) -> tuple[str | None, list[str], np.ndarray]:
        """The real store's vectors."""
        return self.store.all_vectors(arm)

    def version_vectors(self, arm: str, version: str) -> tuple[list[str], np.ndarray]:
        """The real store's vectors of ``version``."""
        return self.store.version_vectors(arm, version)


class RankedTrainer(Trainer):
    """A :class:`Trainer` that takes every decision together with the other ranks."""

    skip_empty = False  # every rank takes every step, an empty share included

    def __init__(self, *args: Any, ranks: Ranks, **kwargs: Any) -> None:
        self.ranks = ranks
        self.rows = GlobalRows()
        self._mark = 0  # local rows created up to here are numbered globally
        self._adopted = False
        self._sync = GradSync(rows=self.rows)
        super().__init__(*args, grad_sync=self._sync, **kwargs)
        if ranks.rank != 0:
            self.store = FollowerStore(self.store)

    def due(self, now_s: float, feed: SampleFeed) -> bool:
        """Due on every rank when due on any (called once per poll on every rank)."""
        return self.ranks.any(super().due(now_s, feed))

    def _encode_changed(self, feed: SampleFeed) -> int:
        return self.ranks.max(super()._encode_changed(feed))

    def _rows_ready(self) -> None:
        index = self.table.index
        mine = index.created_since(self._mark)
        mine = mine[np.argsort(index.created[mine], kind="stable")]
        new = self.rows.unseen(self.ranks.gather([index.ids[r] for r in mine]))
        self.table.ensure(new)
        self._mark = index.clock
        local = np.array([index.rows[i] for i in new], np.int64)
        start = self.rows.add(new, local)
        for lin in self.lineages.values():
            lin.grow(len(self.table))
            if self._adopted and len(local):
                lin.seed_rows(local, start)
        if not self._adopted:
            self._adopt_rank0()
            self._adopted = True

    @torch.no_grad()
    def _adopt_rank0(self) -> None:
        """Every replica takes rank 0's parameters (by global row) and cycle counters."""
        order = torch.as_tensor(self.rows.to_local(np.arange(len(self.rows))),
                                device=self.device)
        wire = self._sync.wire()
        for lin in self.lineages.values():
            for model in (lin.model, lin.served):
                for p in model.dense_parameters():
                    buf = p.data.to(wire)
                    dist.broadcast(buf, 0)
                    p.data.copy_(buf)
                for p in model.sparse_parameters():
                    buf = p.data[order].to(wire)
                    dist.broadcast(buf, 0)
                    p.data[order] = buf.to(p.device)
        counters = [self.cycles] + [c for lin in self.lineages.values()
                                    for c in (lin.cycles, lin.seq, lin.rejected_in_a_row)]
        t = torch.tensor(counters, dtype=torch.int64)
        dist.broadcast(t, 0, group=self.ranks.control)
        self.cycles = int(t[0])
        for k, lin in enumerate(self.lineages.values()):
            lin.cycles, lin.seq, lin.rejected_in_a_row = (int(v) for v in t[1 + 3 * k: 4 + 3 * k])

    def _plan(self, new: int, buffered: int) -> list[tuple[int, int, int]]:
        plan = super()._plan(new, buffered)
        steps = self.ranks.max(len(plan))
        return plan + [(new, new, self.cfg.batch_size)] * (steps - len(plan))

    def _gate_losses(self, lin: Lineage, gate_set: Columns) -> tuple[float, float] | None:
        n = gate_set.size
        cand, served = self._held_out_losses(lin, gate_set) if n else (0.0, 0.0)
        total, cand, served = self.ranks.sums([n, n * cand, n * served])
        return None if total < 16 else (cand / total, served / total)

    def _publish(self, lin: Lineage, model: FreshRecModel, times: tuple[int, int]
                 ) -> Published:
        mine = super()._publish(lin, model, times) if self.ranks.rank == 0 else None
        code = -1
        if mine is not None and mine.version is None:
            code = _WHY.index(mine.why_not) if mine.why_not in _WHY else 0
        code = self.ranks.first(code)
        if mine is not None:
            return mine
        if code >= 0:
            return Published(None, 0.0, _WHY[code])
        return super()._publish(lin, model, times)  # into the FollowerStore: bookkeeping
