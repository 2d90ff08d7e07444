"""What a training cycle needs from the outside: new samples, replay, catalog texts, drift.

The learning side depends on these protocols, never on the concrete ingestion pipeline or
monitors, so a cycle can be driven by the in-process pipeline, a sample topic reader, or a
test's list of samples alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from consumers.columns import Columns, RowIndex
from consumers.events import Sample

__all__ = ["DriftObserver", "SampleFeed"]


class SampleFeed(Protocol):
    """Labelled samples and catalog changes, as ingestion produced them.

    Contract: :meth:`take_fresh_columns` hands each sample out once, oldest first; samples
    it has handed out are also in the replay buffers that :meth:`replay_rows` draws from.
    Everything a cycle computes on is integer columns (:class:`consumers.columns.Columns`):
    a cycle converts no id strings, which on a GPU machine was the CPU work it waited on.
    """

    def pending(self) -> int:
        """Samples produced since the last take (cheap; does not consume)."""
        ...

    def take_fresh_columns(self) -> tuple[list[Sample], Columns]:
        """Consume the samples produced since the last call, oldest first, with their columns.

        The samples are for what needs their fields (arm, event time, ids); the columns,
        row for row the same samples, for scoring and training.
        """
        ...

    def replay_rows(self, n: int, recent_share: float | None = None,
                    holdout_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` samples drawn from the replay buffers, as integer columns.

        ``recent_share`` of them come from the recent window (None: the configured share).
        Returns (item rows, history rows padded with -1, labels); samples of held-out
        requests (``holdout_share`` of them) are dropped. Empty if nothing is buffered.
        """
        ...

    def held_out_columns(self, holdout_below: int, want: int) -> Columns:
        """The gate's set: up to ``want`` of the recent window's newest held-out samples.

        Held out: a request bucket below ``holdout_below``. Newest first.
        """
        ...

    @property
    def item_index(self) -> RowIndex:
        """The item id -> row mapping the columns of :meth:`replay_rows` use."""
        ...

    def buffered(self) -> int:
        """Samples held in the replay buffers."""
        ...

    def changed_items(self) -> int:
        """Catalog items whose text changed and has not been taken yet."""
        ...

    def take_changed_texts(self, limit: int) -> list[tuple[str, str]]:
        """Consume up to ``limit`` changed items as ``(item_id, text)``."""
        ...

    def watermark(self) -> int:
        """Event time (epoch ms) up to which every active partition has been read."""
        ...


class DriftObserver(Protocol):
    """Where a cycle reports what drift detection needs, and asks for its replay mix."""

    @property
    def reference_arm(self) -> str:
        """The lineage whose predictions feed the data-drift detectors."""
        ...

    @property
    def start_after_cycles(self) -> int:
        """Cycles (after warm-up) the reference lineage must have run before it is read."""
        ...

    def observe_predictions(self, arm: str, probs: np.ndarray, labels: np.ndarray,
                            ts: np.ndarray | None = None) -> None:
        """Progressive-validation output of the reference lineage on its own traffic.

        ``ts``: each sample's impression time, so the detectors can read in event time.
        """
        ...

    def observe_publish(self, arm: str, ids: Sequence[str], vectors: np.ndarray,
                        delta: bool = False) -> None:
        """A lineage published these vectors, in ``ids`` order (``delta``: changed rows only)."""
        ...

    def next_recent_share(self, default: float | None) -> float | None:
        """The replay mix for the coming cycle, else ``default``; consumes one boosted cycle."""
        ...
