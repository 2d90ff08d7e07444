"""The serving side's copy of published vectors: a hit costs no Redis round trip.

A published version's vectors never change (the store refuses to reuse a retained
version name), so rows read once from a version can be served again for as long as that
version is current. What can change is which version is current: a publish, a rollback or
a pin flips the pointer. The cache re-reads the pointer, together with the ids asked for,
whenever its last read is older than ``max_age_s``; so a flip is seen within
``max_age_s`` (plus one request), and every answer still comes from one version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from model_store.base import VersionInfo

__all__ = ["CachedVectors", "VectorReader"]

_ABSENT = -1  # index value: the version does not hold this id (unseen ids have none)


class VectorReader(Protocol):
    """What serving reads from a vector store (a :class:`model_store.base.VectorStore`)."""

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """(version, vectors n x dim, found mask) from the arm's current version."""
        ...

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """Metadata of one retained version."""
        ...


class _Rows:
    """Rows of one version of one arm, appended as they are read."""

    def __init__(self, version: str, dim: int, checked: float) -> None:
        self.version, self.checked = version, checked
        self.index: dict[str, int] = {}
        self.data = np.empty((64, dim), np.float32)
        self.n = 0

    def gather(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """(vectors, found) if every id was read before, else None."""
        rows = list(map(self.index.get, ids))  # C speed; None where the id is unseen
        if None in rows:
            return None
        ix = np.array(rows, np.intp)
        found = ix >= 0
        out = self.data[np.where(found, ix, 0)]
        out[~found] = np.nan
        return out, found

    def add(self, ids: Sequence[str], vecs: np.ndarray, found: np.ndarray) -> None:
        new = [k for k, i in enumerate(ids) if i not in self.index]
        if not new:
            return
        need = self.n + len(new)
        if need > len(self.data):
            grown = np.empty((max(need, 2 * len(self.data)), self.data.shape[1]), np.float32)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        for k in new:
            if found[k]:
                self.data[self.n] = vecs[k]
                self.index[ids[k]] = self.n
                self.n += 1
            else:
                self.index[ids[k]] = _ABSENT


class CachedVectors:
    """A :class:`VectorReader` over ``store`` that serves repeated ids from memory.

    Args:
        store: the published vectors (Redis in production).
        max_age_s: how old the pointer read may be before a lookup reads it again; the
            bound on how long a flip (publish, rollback, pin) takes to be seen.
        max_rows: rows kept per arm; past it that arm's rows are dropped and read again.
        clock: monotonic seconds (a test's fake clock).
    """

    def __init__(self, store: VectorReader, max_age_s: float = 0.1, max_rows: int = 500_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.max_age_s, self.max_rows, self.clock = store, max_age_s, max_rows, clock
        self._arms: dict[str, _Rows] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """(version, vectors, found) from one version; from memory when it can be."""
        now = self.clock()
        with self._lock:
            rows = self._arms.get(arm)
            if rows is not None and now - rows.checked < self.max_age_s:
                got = rows.gather(ids)
                if got is not None:
                    self.hits += 1
                    return rows.version, got[0], got[1]
        self.misses += 1
        version, vecs, found = self.store.lookup(arm, ids)  # pointer and rows, one read
        with self._lock:
            rows = self._arms.get(arm)
            if version is None or vecs.shape[1] == 0:
                self._arms.pop(arm, None)
                return version, vecs, found
            if rows is None or rows.version != version or rows.n + len(ids) > self.max_rows:
                rows = self._arms[arm] = _Rows(version, vecs.shape[1], now)
            rows.checked = max(rows.checked, now)
            rows.add(ids, vecs, found)
        return version, vecs, found

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """The store's metadata of ``version`` (the store caches it)."""
        return self.store.info(arm, version)
