"""A cap on live items: the least recently seen are evicted, their rows reused.

Events with ever-new item ids would otherwise grow every per-item table (text vectors,
collaborative rows, optimiser moments, catalog texts) without bound. Once more than
``max_items`` items hold a row, the least recently seen ones (by the batch they were last
looked up in) are evicted down to ``keep_share`` of the cap, in one go, so the costs an
eviction triggers (a full publish, a full checkpoint) are paid once per ``1 - keep_share``
of the cap's turnover. Eviction runs between training cycles (a cycle's snapshot holds
rows); past 1.25 x the cap the worker waits for the cycle in flight first. Items some
buffered sample is about, or a sample the trainer has not taken yet, are never evicted
(the replay columns hold their rows, and the next cycle trains on them), so the cap
should be well above the replay buffers' capacity; an evicted item leaves the buffered
histories.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from consumers.catalog import Catalog
from consumers.replay import ReplayBuffers

__all__ = ["ItemEvictor"]


class ItemEvictor:
    """Evicts least recently seen items past ``max_items`` (0: no cap)."""

    def __init__(self, max_items: int, keep_share: float = 0.9) -> None:
        if max_items < 0 or not 0 < keep_share <= 1:
            raise ValueError("max_items must be >= 0 and keep_share in (0, 1]")
        self.max_items, self.keep_share = max_items, keep_share
        self.evicted = 0
        self.texts_dropped = 0  # catalog texts of items without a row, dropped past the cap

    def over_hard_limit(self, buffers: ReplayBuffers) -> bool:
        """Whether items hold rows past 1.25 x the cap: then eviction must not wait."""
        return self.max_items > 0 and buffers.index.live > self.max_items * 1.25

    def due(self, buffers: ReplayBuffers, catalog: Catalog) -> bool:
        """Whether the cap is exceeded (by items holding a row, or by catalog texts)."""
        return 0 < self.max_items < max(buffers.index.live, len(catalog))

    def run(self, buffers: ReplayBuffers, catalog: Catalog, waiting: Iterable[str] = ()
            ) -> np.ndarray:
        """Evict down to ``keep_share`` of the cap; the freed rows (reset them before reuse).

        ``waiting``: items of samples the trainer has not taken yet (kept too). Call only
        while no training cycle runs: the cycle's snapshot holds rows.
        """
        index = buffers.index
        keep = int(self.max_items * self.keep_share)
        if len(catalog) > self.max_items:
            self.texts_dropped += len(catalog.trim(keep, index.rows.__contains__))
        excess = index.live - keep
        if not 0 < self.max_items < index.live or excess <= 0:
            return np.zeros(0, np.int64)
        waiting_rows = [r for r in map(index.rows.get, waiting) if r is not None]
        keep_rows = np.concatenate([buffers.referenced_rows(),
                                    np.asarray(waiting_rows, dtype=np.int64)])
        rows = index.least_recent(excess, keep_rows)
        catalog.forget(index.evict(rows))
        buffers.drop_history_rows(rows)
        self.evicted += len(rows)
        return rows.astype(np.int64)
