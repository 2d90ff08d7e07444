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
    """Integer rows for item ids, with least-recently-used eviction when a cap is set.

    A row keeps its meaning while its item is live (model embedding rows are indexed by
    it). An evicted item's row goes on a free list and is handed to a later new item; the
    owner of every per-row table resets such rows first (see ``evict``), and
    :attr:`created` tells a checkpoint or a publish which rows hold a new item since a mark.
    ``ids`` has ``""`` at a free row.

    Ingestion and a training cycle running beside it both hand out rows, so creating one
    takes a lock; looking one up does not (an id is listed in ``ids`` before it appears in
    ``rows``, so a reader that finds a row finds its id too). Eviction runs only while no
    cycle runs.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.free: list[int] = []
        self.clock = 0  # rows created so far: ``created`` holds each row's creation number
        self.created = np.zeros(1024, np.int64)
        self.tick = 0  # advanced by the caller (once per batch); ``seen`` holds the last
        self.seen = np.zeros(1024, np.int64)  # tick each row was looked up in
        self._lock = threading.Lock()
        self.extend(ids)

    def __len__(self) -> int:
        """Rows handed out, free ones included (the size every per-row table needs)."""
        return len(self.ids)

    @property
    def live(self) -> int:
        """Items that hold a row."""
        return len(self.rows)

    def row(self, item_id: str) -> int:
        """The id's row, created if new; marks it seen now."""
        row = self.rows.get(item_id)
        if row is None:
            with self._lock:
                row = self.rows.get(item_id)
                if row is None:
                    row = self._create(item_id)
        self.seen[row] = self.tick
        return row

    def extend(self, item_ids: Iterable[str]) -> None:
        """Give every unseen id a row, in order."""
        with self._lock:
            rows = self.rows
            for item_id in item_ids:
                if item_id not in rows:
                    self._create(item_id)

    def _create(self, item_id: str) -> int:
        if not self.free:
            self._append_free()
        row = self.free.pop()
        self.ids[row] = item_id
        self.clock += 1
        self.created[row], self.seen[row] = self.clock, self.tick
        self.rows[item_id] = row
        return row

    def created_since(self, mark: int) -> np.ndarray:
        """Rows whose item was created after creation number ``mark``."""
        return np.flatnonzero(self.created[: len(self.ids)] > mark)

    def least_recent(self, n: int, keep: np.ndarray) -> np.ndarray:
        """Up to ``n`` live rows seen longest ago, none of them in ``keep``."""
        size = len(self.ids)
        candidate = np.ones(size, bool)
        candidate[self.free] = False
        candidate[keep[(keep >= 0) & (keep < size)]] = False
        rows = np.flatnonzero(candidate)
        if len(rows) > n:
            rows = rows[np.argpartition(self.seen[rows], n)[:n]]
        return rows

    def evict(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """Free ``rows`` (their ids lose them; later new ids reuse them); their ids."""
        out = []
        with self._lock:
            for row in map(int, rows):
                item_id = self.ids[row]
                if item_id and self.rows.get(item_id) == row:
                    del self.rows[item_id]
                    self.ids[row] = ""
                    self.free.append(row)
                    out.append(item_id)
        return out

    def assign(self, rows: Sequence[int], ids: Sequence[str], clock: int) -> None:
        """Put ``ids`` at ``rows`` (a checkpoint delta's new items), then set the clock."""
        with self._lock:
            for row, item_id in zip(rows, ids, strict=True):
                while len(self.ids) <= row:
                    self._append_free()
                old = self.ids[row]
                if old and self.rows.get(old) == row:
                    del self.rows[old]
                if not old:
                    self.free.remove(row)
                self.ids[row] = item_id
                self.rows[item_id] = row
            self.clock = clock

    def reset(self, ids: Sequence[str], clock: int = 0) -> None:
        """Replace the contents with ``ids`` in row order (a checkpoint's; "" = free).

        Restored rows count as old to every later creation mark.
        """
        with self._lock:
            self.ids, self.rows, self.free = [], {}, []
            self.created = np.zeros(max(1024, len(ids)), np.int64)
            self.seen = np.zeros(max(1024, len(ids)), np.int64)
            for item_id in ids:
                if item_id:
                    self.rows[item_id] = len(self.ids)
                    self.ids.append(item_id)
                else:
                    self._append_free()
            self.clock = clock

    def _append_free(self) -> None:
        row = len(self.ids)
        if row >= len(self.created):
            self.created = np.concatenate([self.created, np.zeros_like(self.created)])
            self.seen = np.concatenate([self.seen, np.zeros_like(self.seen)])
        self.ids.append("")
        self.free.append(row)


class Columns(NamedTuple):
    """Samples as parallel columns (what :meth:`SampleRows.gather` returns, bucket kept)."""

    item: np.ndarray  # int32 rows
    hist: np.ndarray  # int32 rows, -1 padded
    label: np.ndarray  # int8
    bucket: np.ndarray  # uint16 holdout bucket

    @property
    def size(self) -> int:
        """Samples held (``len`` of a NamedTuple counts its fields)."""
        return len(self.item)

    def without_holdout(self, holdout_below: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, history, labels), held-out buckets (< ``holdout_below``) dropped."""
        if holdout_below <= 0:
            return self.item, self.hist, self.label
        keep = self.bucket >= holdout_below
        return self.item[keep], self.hist[keep], self.label[keep]

    def take(self, idx: np.ndarray) -> Columns:
        """The samples at ``idx`` (positions or a boolean mask), copied."""
        return Columns(self.item[idx], self.hist[idx], self.label[idx], self.bucket[idx])

    def newest_held_out(self, holdout_below: int, want: int) -> Columns:
        """Up to ``want`` samples of held-out buckets (< ``holdout_below``), newest first.

        The columns must be in arrival order (oldest first), as :meth:`ReplayBuffers
        .recent_columns` gives them: this is the gate's held-out set, found by a mask over
        the bucket column instead of hashing request ids sample by sample.
        """
        idx = np.flatnonzero(self.bucket[::-1] < holdout_below)[:want]
        return self.take(self.size - 1 - idx)

    @classmethod
    def of(cls, samples: Sequence[Sample], index: RowIndex) -> Columns:
        """Columns of a list of samples, converted id by id (the slow path)."""
        rows = SampleRows.of(samples, index)
        return cls(rows.item, rows.hist, rows.label, rows.bucket)


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

    def put(self, slot: int, sample: Sample, index: RowIndex, restoring: bool = False) -> None:
        """Write ``sample`` into ``slot`` (its ids get rows in ``index``).

        ``restoring``: history ids without a row (evicted) are left out, as they were
        when their item was evicted, instead of getting a row again.
        """
        row = index.row
        self.item[slot] = row(sample.item_id)
        hist = sample.history[: self.history_len]
        rows = ([index.rows.get(i, -1) for i in hist] if restoring else [row(i) for i in hist])
        self.hist[slot, : len(hist)] = rows
        self.hist[slot, len(hist):] = -1
        self.label[slot] = sample.label
        self.bucket[slot] = holdout_bucket(sample.request_id)

    def gather(self, slots: np.ndarray, holdout_below: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, history, labels) of ``slots``, without held-out buckets (< holdout_below)."""
        if holdout_below > 0:
            slots = slots[self.bucket[slots] >= holdout_below]
        return self.item[slots], self.hist[slots], self.label[slots]

    def columns(self, slots: np.ndarray) -> Columns:
        """Every column of ``slots``, copied."""
        return Columns(self.item[slots], self.hist[slots], self.label[slots],
                       self.bucket[slots])

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
