"""In-memory VectorStore: the reference implementation for tests and dry runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from model_store.base import PinnedError, StaleParentError, VersionInfo

__all__ = ["MemoryVectorStore"]


class MemoryVectorStore:
    """Keeps versions in dicts under one lock; same contract as the Redis store."""

    def __init__(self, retention: int = 3) -> None:
        self.retention = retention
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._info: dict[tuple[str, str], VersionInfo] = {}
        self._current: dict[str, str] = {}
        self._versions: dict[str, list[str]] = {}
        self._pinned: set[str] = set()

    def publish(self, arm: str, version: str, ids: Sequence[str], vectors: np.ndarray,
                info: VersionInfo, parent: str | None = None) -> None:
        """Store the version (a delta over ``parent`` if given), then flip."""
        vecs = np.asarray(vectors, dtype=np.float32)
        rows = {i: vecs[k].copy() for k, i in enumerate(ids)}
        with self._lock:
            if arm in self._pinned:
                raise PinnedError(f"arm {arm!r} is pinned by a rollback")
            if (arm, version) in self._info or (arm, version) in self._data:
                raise ValueError(f"arm {arm!r}: version {version!r} exists; names are not reused")
            if parent is not None:
                if self._current.get(arm) != parent:
                    raise StaleParentError(f"arm {arm!r}: {parent!r} is not current")
                info = replace(info, base_layers=",".join(self._info[(arm, parent)].layers()))
            else:
                info = replace(info, base_layers="")
            self._data[(arm, version)] = rows
            self._info[(arm, version)] = info
            self._current[arm] = version
            versions = self._versions.setdefault(arm, [])
            versions.insert(0, version)
            del versions[self.retention:]
            # Keep every layer a retained version reads; drop the rest.
            keep = {layer for v in versions for layer in self._info[(arm, v)].layers()}
            for key in [k for k in self._data if k[0] == arm and k[1] not in keep]:
                del self._data[key]
                del self._info[key]

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """Vectors of ``ids`` in the current version (NaN rows where missing)."""
        with self._lock:
            version = self._current.get(arm)
            if version is None:
                return None, np.zeros((len(ids), 0), np.float32), np.zeros(len(ids), bool)
            layers = self._layers(arm, version)
            out = np.full((len(ids), self._info[(arm, version)].dim), np.nan, np.float32)
            found = np.zeros(len(ids), bool)
            for k, i in enumerate(ids):
                for rows in layers:
                    if i in rows:
                        out[k], found[k] = rows[i], True
                        break
            return version, out, found

    def _layers(self, arm: str, version: str) -> list[dict[str, np.ndarray]]:
        return [self._data[(arm, v)] for v in self._info[(arm, version)].layers()]

    def current(self, arm: str) -> VersionInfo | None:
        """Metadata of the current version."""
        with self._lock:
            version = self._current.get(arm)
            return None if version is None else self._info[(arm, version)]

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """Metadata of one version that is retained (or an ancestor of one)."""
        with self._lock:
            return self._info.get((arm, version))

    def versions(self, arm: str) -> list[str]:
        """Retained versions, newest first."""
        with self._lock:
            return list(self._versions.get(arm, []))

    def rollback(self, arm: str) -> str:
        """Flip to the version published before the current one, and pin."""
        with self._lock:
            versions, current = self._versions.get(arm, []), self._current.get(arm)
            if current is None or current not in versions:
                raise LookupError(f"arm {arm!r} has no published version")
            idx = versions.index(current)
            if idx + 1 >= len(versions):
                raise LookupError(f"arm {arm!r} has no older retained version")
            self._current[arm] = versions[idx + 1]
            self._pinned.add(arm)
            return versions[idx + 1]

    def unpin(self, arm: str) -> None:
        """Allow publishing again."""
        with self._lock:
            self._pinned.discard(arm)

    def version_vectors(self, arm: str, version: str) -> tuple[list[str], np.ndarray]:
        """Every item of one retained version (LookupError if it is not retained)."""
        with self._lock:
            if (arm, version) not in self._info:
                raise LookupError(f"arm {arm!r}: version {version!r} is not retained")
            rows: dict[str, np.ndarray] = {}
            for layer in reversed(self._layers(arm, version)):
                rows.update(layer)
            ids = sorted(rows)
            dim = self._info[(arm, version)].dim
            mat = np.stack([rows[i] for i in ids]) if ids else np.zeros((0, dim), np.float32)
            return ids, mat

    def all_vectors(self, arm: str) -> tuple[str | None, list[str], np.ndarray]:
        """Every item of the current version."""
        with self._lock:
            version = self._current.get(arm)
            if version is None:
                return None, [], np.zeros((0, 0), np.float32)
            rows: dict[str, np.ndarray] = {}
            for layer in reversed(self._layers(arm, version)):  # oldest first, newest wins
                rows.update(layer)
            ids = sorted(rows)
            dim = self._info[(arm, version)].dim
            mat = np.stack([rows[i] for i in ids]) if ids else np.zeros((0, dim), np.float32)
            return version, ids, mat
