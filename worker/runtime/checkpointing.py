"""A worker's checkpoints as a chain: full ones, and deltas of what changed in between.

A delta over the last checkpoint holds what changed since its marks (see
:meth:`consumers.pipeline.IngestPipeline.state_dict` and
:meth:`worker.learning.training.Trainer.state`); a full one (compaction) is written every
``full_every`` checkpoints, after an item eviction, after a restore, and once the deltas
since the last full one have written as many bytes as it did.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from consumers.pipeline import IngestPipeline
from model_store.checkpoints import CheckpointStore
from worker.experiments.monitor import ExperimentMonitor
from worker.runtime.metrics import Metrics

__all__ = ["CheckpointChain"]

log = logging.getLogger(__name__)


class Trainer(Protocol):
    """What a checkpoint holds of the learning side (see :mod:`worker.learning.training`)."""

    def marks(self) -> dict[str, int]:
        """Where the growing state stands now (what a later delta starts after)."""
        ...

    def state(self, since: dict[str, int] | None = None
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON state and tensors: whole, or what changed since ``since``."""
        ...

    def load(self, state: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned (a delta over what came before it)."""
        ...


class CheckpointChain:
    """Writes a worker's state to ``store`` as full and delta checkpoints; restores it."""

    def __init__(self, store: CheckpointStore, metrics: Metrics, full_every: int = 20) -> None:
        self.store, self.metrics, self.full_every = store, metrics, full_every
        self._parent: Path | None = None
        self._marks: dict[str, dict[str, int]] | None = None  # None: the next one is full
        self._deltas = self._delta_bytes = self._full_bytes = 0

    def force_full(self) -> None:
        """The next checkpoint is a full one."""
        self._marks = None

    def save(self, offsets: dict[tuple[str, int], int], pipeline: IngestPipeline,
             trainer: Trainer | None, monitor: ExperimentMonitor | None) -> None:
        """Write one checkpoint (a delta when it can be one) holding ``offsets``."""
        full = (self._marks is None or self._deltas + 1 >= self.full_every
                or self._delta_bytes >= self._full_bytes)
        since = {} if full or self._marks is None else self._marks
        marks = {"ingest": pipeline.marks()}
        state: dict[str, Any] = {"ingest": pipeline.state_dict(since.get("ingest"))}
        tensors: dict[str, np.ndarray] = {}
        if trainer is not None:
            marks["trainer"] = trainer.marks()
            state["trainer"], tensors = trainer.state(since.get("trainer"))
        if monitor is not None:
            state["monitor"] = monitor.state()
        path = self.store.save(state, tensors, parent=None if full else self._parent,
                               meta={"offsets": [[t, p, o] for (t, p), o in offsets.items()]})
        nbytes = self.store.last_bytes
        self._parent, self._marks = path, marks
        if full:
            self._deltas, self._delta_bytes, self._full_bytes = 0, 0, nbytes
        else:
            self._deltas += 1
            self._delta_bytes += nbytes
        self.metrics.record_checkpoint_bytes("full" if full else "delta", nbytes)

    def restore(self, pipeline: IngestPipeline, trainer: Trainer | None,
                monitor: ExperimentMonitor | None) -> bool:
        """Apply the newest chain that verifies, base first; True if there was one.

        The next checkpoint is a full one: it starts a chain of this process's own.
        """
        chain = self.store.load_latest()
        if not chain:
            return False
        start = time.perf_counter()
        for ckpt in chain:
            pipeline.load_state_dict(ckpt.state["ingest"], final=ckpt is chain[-1])
            if trainer is not None and "trainer" in ckpt.state:
                trainer.load(ckpt.state["trainer"], ckpt.tensors)
        last = chain[-1]
        if monitor is not None and "monitor" in last.state:
            monitor.load(last.state["monitor"])
        self.force_full()
        log.info("restored checkpoint %s (%d deltas over %s, %.2f s; %d samples buffered)",
                 last.path.name, len(chain) - 1, chain[0].path.name,
                 time.perf_counter() - start, len(pipeline.buffers))
        return True
