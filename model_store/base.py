"""The VectorStore contract: versioned item vectors per arm, flipped atomically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["PinnedError", "StaleParentError", "StoreUnavailable", "VectorStore", "VersionInfo"]


class StoreUnavailable(ConnectionError):
    """The store cannot be reached right now (connection refused, timed out, loading).

    Transient by nature: callers keep what they have and retry later; nothing was written
    that a retry would duplicate (publishes are whole versions, counters carry tokens).
    """


class PinnedError(RuntimeError):
    """The arm is pinned to a version by a rollback; publishing would undo the rollback."""


class StaleParentError(RuntimeError):
    """A delta publish named a parent that is no longer the arm's current version.

    Another publisher or a rollback moved the pointer; the delta would lose their rows,
    so nothing was made current. The caller publishes a full version instead.
    """


@dataclass(frozen=True)
class VersionInfo:
    """Metadata stored beside a version's vectors."""

    version: str
    dim: int
    item_count: int
    created_at: str
    model_version: str = ""
    dtype: str = "float32"
    extra: dict[str, str] = field(default_factory=dict)
    #: vector added to the pooled history vectors to make a user vector (little-endian f32)
    user_prior: bytes = b""
    #: the rest of the user tower (worker.learning.user_tower; "" = mean of the history)
    user_tower: bytes = b""
    #: a delta version's ancestors, parent first, comma-separated ("" for a full version);
    #: set by the store when it publishes with ``parent``
    base_layers: str = ""

    def layers(self) -> list[str]:
        """Versions whose rows make this one up, newest first: itself, then its ancestors.

        An item's vector is its row in the first layer that has one.
        """
        return [self.version, *self.base_layers.split(",")] if self.base_layers \
            else [self.version]


class VectorStore(Protocol):
    """Versioned item vectors, one lineage ("arm") at a time.

    Contract:
      * :meth:`publish` writes the whole version first and then makes it current in one
        atomic step; readers see the old version or the new one, never a mix.
      * :meth:`lookup` reads the pointer and the vectors atomically; unknown items come
        back as rows of NaN, and ``found`` says which were present.
      * :meth:`rollback` flips back to the previous retained version and pins the arm there;
        :meth:`publish` then raises :class:`PinnedError` until :meth:`unpin`.
      * Only the newest ``retention`` versions are kept; older ones are deleted on publish.
      * A version's vectors never change once published: :meth:`publish` refuses a name
        that is still retained (``ValueError``), so readers may cache by version.
      * Delta versions: published with ``parent`` (the current version), a version holds
        only the rows that changed and reads every other row from its ancestors. It is
        still whole and atomic to readers, and an ancestor's rows are kept while any
        retained version needs them, so retention costs the changed rows per version,
        not the catalog. :meth:`publish` raises :class:`StaleParentError` (and changes
        nothing readers see) if ``parent`` is no longer current.
    """

    def publish(self, arm: str, version: str, ids: Sequence[str], vectors: np.ndarray,
                info: VersionInfo, parent: str | None = None) -> None:
        """Write ``vectors`` (n x dim float32) under ``version`` and make it current.

        ``parent``: publish a delta over that version (which must be current): ``ids``
        are only the new and changed rows; ``info.item_count`` counts them all.
        """
        ...

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """Return (version, vectors n x dim, found mask) for the arm's current version."""
        ...

    def current(self, arm: str) -> VersionInfo | None:
        """Metadata of the arm's current version, or None before the first publish."""
        ...

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """Metadata of one retained version (None once it is retired)."""
        ...

    def versions(self, arm: str) -> list[str]:
        """Retained versions of the arm, newest first."""
        ...

    def rollback(self, arm: str) -> str:
        """Make the version before the current one current and pin it; return it."""
        ...

    def unpin(self, arm: str) -> None:
        """Allow publishing to the arm again after a rollback."""
        ...

    def all_vectors(self, arm: str) -> tuple[str | None, list[str], np.ndarray]:
        """Every item of the current version: (version, ids, vectors)."""
        ...

    def version_vectors(self, arm: str, version: str) -> tuple[list[str], np.ndarray]:
        """Every item of one retained version: (ids, vectors); LookupError if not retained."""
        ...
