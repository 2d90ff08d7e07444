"""A training cycle's input, taken from the pipeline at one moment.

This is what lets a cycle run on a thread of its own while ingestion goes on. The live
pipeline keeps changing (new samples, overwritten replay slots, catalog updates), so a
cycle that ran on it from another thread would read half-written state. Instead the
ingestion thread hands the cycle a :class:`FeedSnapshot`: the fresh samples (taken, as a
synchronous cycle would take them) with their integer columns, random replay draws copied
out of both buffers' columns (as many rows as the cycle can use), the recent window's
columns (for the gate's held-out set), the changed catalog texts it will encode, and the
watermark. Only the item row index stays shared: it
hands out rows under a lock (and frees rows only between cycles).
"""

from __future__ import annotations

import numpy as np

from consumers.columns import HOLDOUT_BUCKETS, Columns, RowIndex
from consumers.events import Sample
from consumers.pipeline import IngestPipeline

__all__ = ["FeedSnapshot"]


class _Pool:
    """Pre-drawn replay rows, handed out in order (they are random draws already)."""

    def __init__(self, cols: Columns) -> None:
        self.cols, self.pos = cols, 0

    def __len__(self) -> int:
        return len(self.cols.item)

    def take(self, n: int) -> Columns:
        size = len(self)
        idx = (self.pos + np.arange(n)) % size  # wraps only if a cycle outruns its budget
        self.pos = (self.pos + n) % size
        return self.cols.take(idx)


class FeedSnapshot:
    """A :class:`worker.learning.feed.SampleFeed` frozen when the cycle started.

    Build it on the ingestion thread with :meth:`take`; then only the cycle uses it.
    """

    def __init__(self, fresh: list[Sample], fresh_cols: Columns | None, recent: Columns,
                 pools: tuple[Columns, Columns], index: RowIndex, recent_share: float,
                 buffered: int, changed: list[tuple[str, str]], watermark: int) -> None:
        self._fresh, self._fresh_cols = fresh, fresh_cols
        self._recent = recent
        self._pools = (_Pool(pools[0]), _Pool(pools[1]))
        self._index = index
        self.recent_share = recent_share
        self._buffered = buffered
        self._changed = changed
        self._watermark = watermark

    @classmethod
    def take(cls, pipeline: IngestPipeline, replay_rows: int, encode_limit: int
             ) -> FeedSnapshot:
        """Take the fresh samples and changed texts from ``pipeline``; copy the rest.

        ``replay_rows``: rows drawn from each buffer (the most a cycle's batches can use).
        Everything copied is integer columns (a few MB), so taking one costs the ingestion
        thread milliseconds.
        """
        buffers = pipeline.buffers
        pools = buffers.draw_columns(max(replay_rows, 1))
        fresh = pipeline.take_fresh()
        return cls(fresh, buffers.newest_columns(fresh), buffers.recent_columns(), pools,
                   pipeline.item_index, buffers.recent_share, len(buffers),
                   pipeline.take_changed_texts(encode_limit), pipeline.watermark())

    # ----------------------------------------------------------------- SampleFeed
    def pending(self) -> int:
        """Fresh samples not taken yet."""
        return len(self._fresh)

    def take_fresh(self) -> list[Sample]:
        """The fresh samples, once."""
        out, self._fresh, self._fresh_cols = self._fresh, [], None
        return out

    def take_fresh_columns(self) -> tuple[list[Sample], Columns]:
        """The fresh samples and their columns, once.

        Converted here, on the cycle's thread, only when they were not all in the recent
        window any more (a backlog larger than it).
        """
        cols = self._fresh_cols
        fresh = self.take_fresh()
        return fresh, Columns.of(fresh, self._index) if cols is None else cols

    def replay_rows(self, n: int, recent_share: float | None = None,
                    holdout_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like the pipeline's: ``n`` rows, ``recent_share`` of them recent, holdout dropped."""
        share = self.recent_share if recent_share is None else recent_share
        recent, old = self._pools
        cut = int(holdout_share * HOLDOUT_BUCKETS)
        if not n or (not len(recent) and not len(old)):
            width = recent.cols.hist.shape[1]
            return np.zeros(0, np.int32), np.zeros((0, width), np.int32), np.zeros(0, np.int8)
        n_recent = round(n * share) if len(recent) and len(old) else (n if len(recent) else 0)
        parts = [pool.take(k).without_holdout(cut)
                 for pool, k in ((recent, n_recent), (old, n - n_recent)) if k and len(pool)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def held_out_columns(self, holdout_below: int, want: int) -> Columns:
        """The gate's set, from the recent window as it was."""
        return self._recent.newest_held_out(holdout_below, want)

    @property
    def item_index(self) -> RowIndex:
        """The shared item rows."""
        return self._index

    def buffered(self) -> int:
        """Samples that were in the buffers."""
        return self._buffered

    def changed_items(self) -> int:
        """Changed catalog texts taken with the snapshot and not handed out yet."""
        return len(self._changed)

    def take_changed_texts(self, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` of the texts taken with the snapshot."""
        out, self._changed = self._changed[:limit], self._changed[limit:]
        return out

    def watermark(self) -> int:
        """The pipeline's watermark when the snapshot was taken."""
        return self._watermark
