"""Samples as integer columns: the training input path, converted once at join time.

Turning Python strings into tensor rows per training batch ran at ~42k samples/s, far
below what a GPU consumes. Here every id becomes an integer row once, when the sample
enters the replay buffers, into preallocated arrays; a batch is then a vectorised gather by
index and one copy to the device.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from consumers.events import Sample

__all__ = ["HOLDOUT_BUCKETS", "Columns", "RowIndex", "SampleRows", "holdout_bucket"]

#: Requests are split into this many buckets by a hash; a share s holds out buckets < s * N.
HOLDOUT_BUCKETS = 10_000


def holdout_bucket(request_id: str) -> int:
    """The request's bucket for the held-out split (stable across processes and restarts).

    >>> holdout_bucket("r1") == holdout_bucket("r1") and 0 <= holdout_bucket("r1") < 10_000
    True
    """
    return zlib.crc32(request_id.encode()) % HOLDOUT_BUCKETS


class RowIndex:
    """Stable integer rows for item ids.

    A row is never reused, so it keeps its meaning across cycles and checkpoints (model
    embedding rows are indexed by it).

    Ingestion and a training cycle running beside it both hand out rows, so creating one
    takes a lock; looking one up does not (an id is listed in ``ids`` before it appears in
    ``rows``, so a reader that finds a row finds its id too).
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self._lock = threading.Lock()
        self.extend(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, item_id: str) -> int:
        """The id's row, created if new."""
        row = self.rows.get(item_id)
        if row is None:
            with self._lock:
                row = self.rows.get(item_id)
                if row is None:
                    row = len(self.ids)
                    self.ids.append(item_id)
                    self.rows[item_id] = row
        return row

    def extend(self, item_ids: Iterable[str]) -> None:
        """Give every unseen id a row, in order."""
        with self._lock:
            rows, ids = self.rows, self.ids
            for item_id in item_ids:
                if item_id not in rows:
                    ids.append(item_id)
                    rows[item_id] = len(ids) - 1

    def reset(self, ids: Sequence[str]) -> None:
        """Replace the contents with ``ids`` in row order (a checkpoint's)."""
        with self._lock:
            self.ids, self.rows = [], {}
        self.extend(ids)


class Columns(NamedTuple):
    """Samples as parallel columns (what :meth:`SampleRows.gather` returns, bucket kept)."""

    item: np.ndarray  # int32 rows
    hist: np.ndarray  # int32 rows, -1 padded
    label: np.ndarray  # int8
    bucket: np.ndarray  # uint16 holdout bucket

    def without_holdout(self, holdout_below: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, history, labels), held-out buckets (< ``holdout_below``) dropped."""
        if holdout_below <= 0:
            return self.item, self.hist, self.label
        keep = self.bucket >= holdout_below
        return self.item[keep], self.hist[keep], self.label[keep]


class SampleRows:
    """Preallocated columns for ``capacity`` samples, written slot by slot.

    ``hist`` rows are padded with -1; ``bucket`` is :func:`holdout_bucket` of the request.
    Memory is fixed at construction: (4 + 4 * history_len + 1 + 2) bytes per slot.
    """

    def __init__(self, capacity: int, history_len: int) -> None:
        self.capacity, self.history_len = capacity, history_len
        self.item = np.zeros(capacity, np.int32)
        self.hist = np.full((capacity, history_len), -1, np.int32)
        self.label = np.zeros(capacity, np.int8)
        self.bucket = np.zeros(capacity, np.uint16)

    def put(self, slot: int, sample: Sample, index: RowIndex) -> None:
        """Write ``sample`` into ``slot`` (its ids get rows in ``index``)."""
        row = index.row
        self.item[slot] = row(sample.item_id)
        hist = sample.history[: self.history_len]
        self.hist[slot, : len(hist)] = [row(i) for i in hist]
        self.hist[slot, len(hist):] = -1
        self.label[slot] = sample.label
        self.bucket[slot] = holdout_bucket(sample.request_id)

    def gather(self, slots: np.ndarray, holdout_below: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, history, labels) of ``slots``, without held-out buckets (< holdout_below)."""
        if holdout_below > 0:
            slots = slots[self.bucket[slots] >= holdout_below]
        return self.item[slots], self.hist[slots], self.label[slots]

    @classmethod
    def of(cls, samples: Sequence[Sample], index: RowIndex,
           history_len: int | None = None) -> SampleRows:
        """Columns for a list of samples (e.g. a cycle's new ones), converted once.

        Histories are as wide as the longest one (capped at ``history_len`` if given).
        """
        width = max((len(s.history) for s in samples), default=0)
        if history_len is not None:
            width = min(width, history_len)
        out = cls(len(samples), max(1, width))
        for slot, sample in enumerate(samples):
            out.put(slot, sample, index)
        return out
