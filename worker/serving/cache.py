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
from typing import Protocol, cast

import numpy as np
import orjson

from model_store.base import VersionInfo

__all__ = ["CachedVectors", "VectorReader", "row_json", "rows_json"]

_ABSENT = -1  # index value: the version does not hold this id (unseen ids have none)


def row_json(row: np.ndarray) -> bytes:
    """One float32 vector as a JSON array, each number in its shortest exact form."""
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)


def rows_json(vecs: np.ndarray, found: np.ndarray) -> list[bytes]:
    """Each row as JSON, ``null`` where ``found`` is False."""
    return [row_json(v) if f else b"null" for v, f in zip(vecs, found, strict=True)]


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
        # Each row's JSON, made on its first JSON answer: encoding floats is most of what a
        # vector lookup costs, and a row's JSON never changes either.
        self.json: list[bytes | None] = []

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

    def unseen(self, ids: Sequence[str]) -> list[str]:
        """The ids never read from this version, each once, in order."""
        index = self.index
        return [i for i in dict.fromkeys(ids) if i not in index]

    def gather_json(self, ids: Sequence[str]) -> list[bytes] | None:
        """Each id's vector as JSON (``null`` where absent) if every id was read before."""
        found = list(map(self.index.get, ids))
        if None in found:
            return None
        out, cache = [], self.json
        for k in cast(list[int], found):
            if k < 0:
                out.append(b"null")
                continue
            frag = cache[k]
            if frag is None:
                frag = cache[k] = row_json(self.data[k])
            out.append(frag)
        return out

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
                self.json.append(None)
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
        self.hits = self.misses = 0  # requests answered from memory / with a read
        self.ids_hit = self.ids_read = 0  # ids served from memory / read from the store

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """(version, vectors, found) from one version; from memory when it can be.

        Within ``max_age_s`` of the last pointer read, ids read before are served from
        memory and only the others are read, together with the pointer, in one round trip;
        if the pointer still names the cached version, the answer is the cached rows plus
        the ones just read (a version never changes), and if it moved, every id is read
        again from the version it names. A due pointer is read with every id at once.
        """
        now = self.clock()
        with self._lock:
            rows = self._arms.get(arm)
            if rows is not None and now - rows.checked < self.max_age_s:
                got = rows.gather(ids)
                if got is not None:
                    self.hits += 1
                    self.ids_hit += len(ids)
                    return rows.version, got[0], got[1]
            due = rows is None or now - rows.checked >= self.max_age_s
            # A due pointer may have moved: read every id with it, one round trip either way.
            missing = list(ids) if due or rows is None else rows.unseen(ids)
            if rows is not None and rows.n + len(missing) > self.max_rows:
                missing = list(ids)  # the rows will be dropped: one whole read
            cached = rows.version if rows is not None else None
        self.misses += 1
        version, vecs, found = self.store.lookup(arm, missing or list(ids[:1]))
        with self._lock:
            rows = self._arms.get(arm)
            if version is None or vecs.shape[1] == 0:
                self._arms.pop(arm, None)
                return version, *self._whole(version, vecs, found, ids, missing)
            if (rows is not None and rows.version == version == cached
                    and rows.n + len(missing) <= self.max_rows):
                rows.checked = max(rows.checked, now)
                rows.add(missing, vecs, found)
                got = rows.gather(ids)
                if got is not None:
                    self.ids_hit += len(ids) - len(missing)
                    self.ids_read += len(missing)
                    return version, got[0], got[1]
        if missing != list(ids):
            # The version moved (or its rows were dropped): every id, from one version.
            version, vecs, found = self.store.lookup(arm, ids)
        self.ids_read += len(ids)
        with self._lock:
            if version is None or vecs.shape[1] == 0:
                self._arms.pop(arm, None)
                return version, vecs, found
            rows = self._arms.get(arm)
            if rows is None or rows.version != version or rows.n + len(ids) > self.max_rows:
                rows = self._arms[arm] = _Rows(version, vecs.shape[1], now)
            rows.checked = max(rows.checked, now)
            rows.add(ids, vecs, found)
        return version, vecs, found

    @staticmethod
    def _whole(version: str | None, vecs: np.ndarray, found: np.ndarray, ids: Sequence[str],
               missing: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """An arm with no version: every id absent (the read may have been of fewer ids)."""
        if list(missing) == list(ids):
            return vecs, found
        return np.zeros((len(ids), vecs.shape[1]), np.float32), np.zeros(len(ids), bool)

    def lookup_json(self, arm: str, ids: Sequence[str]) -> tuple[str | None, int, list[bytes]]:
        """(version, width, each id's vector as JSON or ``null``), from one version."""
        for _ in range(3):
            version, vecs, found = self.lookup(arm, ids)
            if version is None or vecs.shape[1] == 0:
                return version, int(vecs.shape[1]), [b"null"] * len(ids)
            with self._lock:
                rows = self._arms.get(arm)
                got = rows.gather_json(ids) if rows is not None and rows.version == version \
                    else None
            if got is not None:
                return version, int(vecs.shape[1]), got
        # The rows moved on between the two steps three times: encode what was read.
        return version, int(vecs.shape[1]), rows_json(vecs, found)

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """The store's metadata of ``version`` (the store caches it)."""
        return self.store.info(arm, version)
