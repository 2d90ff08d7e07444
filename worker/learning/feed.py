"""What a training cycle needs from the outside: new samples, replay, catalog texts, drift.

The learning side depends on these protocols, never on the concrete ingestion pipeline or
monitors, so a cycle can be driven by the in-process pipeline, a sample topic reader, or a
test's list of samples alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from consumers.columns import RowIndex
from consumers.events import Sample

__all__ = ["DriftObserver", "SampleFeed"]


class SampleFeed(Protocol):
    """Labelled samples and catalog changes, as ingestion produced them.

    Contract: :meth:`take_fresh` hands each sample out once, oldest first; samples it has
    handed out are also in the replay buffers that :meth:`replay` draws from.
    """

    def pending(self) -> int:
        """Samples produced since the last :meth:`take_fresh` (cheap; does not consume)."""
        ...

    def take_fresh(self) -> list[Sample]:
        """Consume and return the samples produced since the last call, oldest first."""
        ...

    def replay(self, n: int, recent_share: float | None = None) -> list[Sample]:
        """Draw ``n`` samples from the replay buffers; empty if nothing is buffered.

        ``recent_share`` of them come from the recent window (None: the configured share).
        """
        ...

    def replay_rows(self, n: int, recent_share: float | None = None,
                    holdout_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`replay` as integer columns: the fast path a training batch takes.

        Returns (item rows, history rows padded with -1, labels); samples of held-out
        requests (``holdout_share`` of them) are dropped.
        """
        ...

    @property
    def item_index(self) -> RowIndex:
        """The item id -> row mapping the columns of :meth:`replay_rows` use."""
        ...

    def buffered(self) -> int:
        """Samples held in the replay buffers."""
        ...

    def recent_newest_first(self) -> Iterator[Sample]:
        """The recent window, newest first (for the held-out gate set)."""
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
