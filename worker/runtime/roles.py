"""What the worker's loop drives: a trainer of arms, and a sink for samples it hands on.

Protocols, so the loop runs one process's trainer, a ranked (multi-process) one, or none
(an ingest-only role whose samples go to a topic) without knowing which.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from consumers.events import Sample
from worker.learning.feed import SampleFeed
from worker.learning.reports import CycleReport

__all__ = ["SampleSink", "Trainer"]


class Trainer(Protocol):
    """What the loop needs from the learning side (see :mod:`worker.learning.training`)."""

    def due(self, now_s: float, feed: SampleFeed) -> bool:
        """Whether a cycle should run now."""
        ...

    def run_cycle(self, feed: SampleFeed, now_s: float) -> Sequence[CycleReport]:
        """Run one cycle: validate, train, gate, publish. Raises only on infrastructure loss."""
        ...

    def marks(self) -> dict[str, int]:
        """Where the growing state stands now (what a later delta starts after)."""
        ...

    def state(self, since: dict[str, int] | None = None
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON state and tensors to checkpoint: whole, or what changed since ``since``."""
        ...

    def load(self, state: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned (a delta over what came before it)."""
        ...

    def served_versions(self) -> dict[str, str | None]:
        """Each arm's current version as the store sees it (rollbacks included)."""
        ...

    def cycle_ended(self, now_s: float) -> None:
        """The cycle started by :meth:`run_cycle` ended at ``now_s``."""
        ...

    def cycle_budget(self, pending: int) -> tuple[int, int]:
        """(replay rows per buffer, catalog texts) a cycle over ``pending`` samples uses."""
        ...

    def forget(self, rows: np.ndarray) -> None:
        """Item rows were evicted: reset them (called while no cycle runs)."""
        ...


class SampleSink(Protocol):
    """Where an ingest-tier worker sends its labelled samples (:mod:`consumers.kafka_samples`)."""

    def send(self, samples: Iterable[Sample]) -> None:
        """Queue samples; never raises."""
        ...

    def flush(self) -> None:
        """Wait for every queued sample to be durable; raise if one is not."""
        ...
