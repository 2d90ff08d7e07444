"""The user tower as published with a version, evaluated in numpy by serving.

A user vector is built from the vectors of the user's recent positive items, newest first:

    a_k  = exp(r_k) * m_k / sum_j exp(r_j) * m_j        recency weights over present items
    u    = u0 + C @ (sum_k a_k w_k) + m_0 * (L @ w_0)    w_k: item vectors, m_k: present

With context vectors (published after ``[w, b]`` as ``[w, b, v]``), the user also carries
``sum_k a_k v_k``: each item's own, learnt reading as history, so the item-to-item part is
of full rank. The user vector is then ``[u, 1, 0...]``, as wide as a published row.

``r`` (one logit per history position), ``C`` (how a watched item reads as context, not
as a target) and ``L`` (what the newest item says about the next one) make the user
order-aware and asymmetric: ``(L w_A) . w_B`` need not equal ``(L w_B) . w_A``, so "A then
B" is not "B then A". With ``r = 0``, ``C = I`` and ``L = 0`` it is the plain mean of the
history plus the prior. The trainer learns the same formula in torch
(:class:`worker.learning.model.FreshRecModel`), so the served score is the model's logit.

No torch here: ``freshrec serve`` imports this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["UserTower"]

_MAGIC = b"FRUT"
_HEADER = struct.Struct("<4sHHI")  # magic, format version, history length, dim


@dataclass(frozen=True)
class UserTower:
    """Parameters of the user side of one published version (float32).

    Attributes:
        prior: ``u0`` (dim,).
        recency: ``r`` (history,), one logit per position, newest first.
        context: ``C`` (dim, dim).
        last: ``L`` (dim, dim).
        context_vectors: published rows are ``[w, b, v]`` (width 2 dim + 1).
    """

    prior: np.ndarray
    recency: np.ndarray
    context: np.ndarray
    last: np.ndarray
    context_vectors: bool = False

    @property
    def width(self) -> int:
        """Width of a published row, and of the user vector."""
        return self.dim + 1 + (self.dim if self.context_vectors else 0)

    @property
    def dim(self) -> int:
        """Width of item and user vectors (without the bias coordinate)."""
        return int(self.prior.shape[0])

    @property
    def history_len(self) -> int:
        """Positions the recency weights cover; longer histories are cut to it."""
        return int(self.recency.shape[0])

    @classmethod
    def mean(cls, prior: np.ndarray, history_len: int = 10) -> UserTower:
        """The order-free tower: prior plus the mean of the history's vectors."""
        dim = len(prior)
        return cls(np.asarray(prior, np.float32), np.zeros(history_len, np.float32),
                   np.eye(dim, dtype=np.float32), np.zeros((dim, dim), np.float32))

    def to_bytes(self) -> bytes:
        """A self-describing little-endian blob (stored in the version's metadata)."""
        head = _HEADER.pack(_MAGIC, 2 if self.context_vectors else 1, self.history_len,
                            self.dim)
        body = [np.asarray(a, "<f4").tobytes() for a in (self.recency, self.context, self.last)]
        return head + b"".join(body)

    @classmethod
    def from_bytes(cls, prior: bytes, tower: bytes) -> UserTower:
        """The tower of a version's ``user_prior`` and ``user_tower`` fields.

        A version without a tower (``tower`` empty) gets the order-free one.
        """
        u0 = np.frombuffer(prior, "<f4").astype(np.float32)
        if not tower:
            return cls.mean(u0)
        magic, version, hist, dim = _HEADER.unpack_from(tower)
        if magic != _MAGIC or version not in (1, 2) or dim != len(u0):
            raise ValueError(f"unknown user tower (magic {magic!r}, version {version}, "
                             f"dim {dim} for a prior of {len(u0)})")
        body = np.frombuffer(tower, "<f4", offset=_HEADER.size).astype(np.float32)
        if len(body) != hist + 2 * dim * dim:
            raise ValueError("user tower blob has the wrong length")
        return cls(u0, body[:hist], body[hist:hist + dim * dim].reshape(dim, dim),
                   body[hist + dim * dim:].reshape(dim, dim), context_vectors=version == 2)

    def user_vector(self, history: np.ndarray, present: np.ndarray | None = None
                    ) -> np.ndarray:
        """``[u, 1]`` (``[u, 1, 0...]`` with context vectors) from published history rows.

        Args:
            history: (n, width) rows of the recent positives, newest first (``[w, b]``
                or ``[w, b, v]``); rows beyond :attr:`history_len` are ignored.
            present: (n,) False where an item has no vector in the version (its row is
                ignored, and its position stays taken); None: all present.
        """
        n = min(len(history), self.history_len)
        d = self.dim
        w = np.nan_to_num(np.asarray(history[:n, :d], np.float32))
        m = (np.ones(n, bool) if present is None else np.asarray(present[:n], bool))
        m = m & ~np.isnan(np.asarray(history[:n, 0], np.float32)) if n else m
        user = self.prior.copy()
        if n and m.any():
            r = self.recency[:n]
            e = np.exp(r - r[m].max()) * m
            pooled = (e[:, None] * w).sum(0) / e.sum()
            user += self.context @ pooled
            if self.context_vectors:
                v = np.nan_to_num(np.asarray(history[:n, d + 1:], np.float32))
                user += (e[:, None] * v).sum(0) / e.sum()
            if m[0]:
                user += self.last @ w[0]
        tail = np.zeros(d if self.context_vectors else 0, np.float32)
        return np.concatenate([user, [1.0], tail]).astype(np.float32)
