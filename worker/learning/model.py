"""The CTR model: item vectors that fuse frozen text semantics with learned collaboration.

Item vector ``w_i = proj(s_i) + alpha * c_i`` where ``s_i`` is the language-model vector of
the item's text and ``c_i`` a collaborative embedding learned from clicks (zero for a new
item, so a brand-new item is placed by its text alone). A user is built from the vectors of
their recent positive items, newest first, by the user tower of
:mod:`worker.learning.user_tower` (recency weights, a context map and a next-item map, plus
the prior ``u0``), so serving needs only item vectors, the tower's few parameters and a
history. ``logit = <u, w_i> + b_i + b0``. The published vector is ``[w_i, b_i + b0]`` and
the serving user vector ``[u, 1]``: one dot product gives the exact logit. With context
vectors the published row is ``[w_i, b_i + b0, v_i]`` and the user vector ``[u, 1, 0...]``.

Pure library: no Kafka, Redis or environment access; seeded; ``state_dict`` round-trips.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from worker.learning.user_tower import UserTower

__all__ = ["INIT_SCALE", "FreshRecModel"]

#: Norm of the initial collaborative rows and user prior, relative to a unit text vector.
INIT_SCALE = 0.1


def _noise(rows: int, dim: int, seed: int) -> torch.Tensor:
    """Seeded rows of norm ~INIT_SCALE: the same seed gives the same rows on every device."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=gen) * (INIT_SCALE / dim ** 0.5)


class FreshRecModel(nn.Module):
    """Two-part item representation with sparse collaborative rows.

    Args:
        text_dim: width of the text encoder's vectors.
        dim: width of the item and user vectors.
        capacity: initial rows of the sparse embeddings (grows on demand).
        seed: seeds the dense initialisation.
        history_len: history positions the user tower weighs (longer ones are cut).
        learn_order: train the user tower's recency, context and next-item parameters;
            False keeps them at their start, the plain mean of the history.
        context_vectors: give every item a second learned row, ``v_i``, for its role in a
            history (what watching it says about the next item), apart from ``w_i``, its
            role as a candidate. The user then carries ``sum_k a_k v_k`` too, so "A then
            B" is scored by ``v_A . w_B``, which need not equal ``v_B . w_A``: an
            item-to-item model of full rank, learnt by the same cycles (asymmetric factor
            models: Koren's NSVD, FISM).
    """

    def __init__(self, text_dim: int = 384, dim: int = 64, capacity: int = 1024,
                 seed: int = 0, history_len: int = 10, learn_order: bool = False,
                 context_vectors: bool = False) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.text_dim, self.dim, self.seed = text_dim, dim, seed
        self.proj = nn.Linear(text_dim, dim)
        with torch.no_grad():
            # Scaled so that unit-norm text vectors map to vectors of norm ~1: text-similar
            # items start out with similar vectors and sensible dot products.
            self.proj.weight.normal_(0.0, 1.0 / dim ** 0.5, generator=gen)
            self.proj.bias.zero_()
        self.collab = nn.Embedding(capacity, dim, sparse=True)
        self.item_bias = nn.Embedding(capacity, 1, sparse=True)
        with torch.no_grad():
            self.collab.weight.copy_(_noise(capacity, dim, seed * 1_000_003 + 0))
        nn.init.zeros_(self.item_bias.weight)
        # Zero at the start: a history then reads as the plain tower would read it, and
        # each v_k moves only by what its item predicted about the items that followed.
        self.ctx: nn.Embedding | None = None
        if context_vectors:
            self.ctx = nn.Embedding(capacity, dim, sparse=True)
            nn.init.zeros_(self.ctx.weight)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.user_prior = nn.Parameter(_noise(1, dim, seed * 1_000_003 + 1)[0])
        self.bias = nn.Parameter(torch.zeros(1))
        # The user tower starts as the plain mean of the history (see user_tower).
        self.recency = nn.Parameter(torch.zeros(history_len))
        self.context = nn.Parameter(torch.eye(dim))
        self.last = nn.Parameter(torch.zeros(dim, dim))
        for param in (self.recency, self.context, self.last):
            param.requires_grad_(learn_order)

    @property
    def capacity(self) -> int:
        """Rows in the sparse embeddings."""
        return int(self.collab.num_embeddings)

    @property
    def width(self) -> int:
        """Width of a published item row: ``[w, b]``, then ``v`` with context vectors."""
        return self.dim + 1 + (self.dim if self.ctx is not None else 0)

    def sparse_parameters(self) -> list[torch.Tensor]:
        """Parameters with sparse gradients (for SparseAdam)."""
        rows = [self.collab.weight, self.item_bias.weight]
        return rows if self.ctx is None else [*rows, self.ctx.weight]

    def dense_parameters(self) -> list[torch.Tensor]:
        """Everything else (for Adam)."""
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse and p.requires_grad]

    def grow(self, capacity: int) -> bool:
        """Enlarge the sparse tables to at least ``capacity`` rows; True if they grew."""
        if capacity <= self.capacity:
            return False
        new_cap = self.capacity
        while new_cap < capacity:
            new_cap *= 2
        tables = [("collab", self.dim), ("item_bias", 1)]
        if self.ctx is not None:
            tables.append(("ctx", self.dim))
        for name, width in tables:
            old: nn.Embedding = getattr(self, name)
            new = nn.Embedding(new_cap, width, sparse=True, device=old.weight.device)
            with torch.no_grad():
                new.weight.zero_()
                new.weight[: old.num_embeddings] = old.weight
                if name == "collab":  # new rows get their own seeded noise
                    fresh = _noise(new_cap - old.num_embeddings, width,
                                   self.seed * 1_000_003 + old.num_embeddings)
                    new.weight[old.num_embeddings:] = fresh.to(old.weight.device)
            setattr(self, name, new)
        return True

    @torch.no_grad()
    def reset_rows(self, rows: np.ndarray, salt: int) -> None:
        """Rows an evicted item held start over as a new item's would (seeded noise, 0 bias)."""
        device = self.collab.weight.device
        idx = torch.as_tensor(rows, dtype=torch.long, device=device)
        self.collab.weight[idx] = _noise(len(rows), self.dim, self.seed * 7919 + salt).to(device)
        self.item_bias.weight[idx] = 0.0
        if self.ctx is not None:
            self.ctx.weight[idx] = 0.0

    def item_vectors(self, rows: torch.Tensor, semantic: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, b) for item rows of any shape: w has a trailing ``dim`` axis."""
        w = self.proj(semantic[rows]) + self.alpha * self.collab(rows)
        return w, self.item_bias(rows).squeeze(-1)

    def forward(self, items: torch.Tensor, history: torch.Tensor, history_mask: torch.Tensor,
                semantic: torch.Tensor) -> torch.Tensor:
        """Logits (B,) for item rows (B,) given history rows (B, H) and their 0/1 mask.

        Each distinct row is projected once: a batch of 512 with histories of 10 names
        5,632 rows but often far fewer distinct items, and the projection is most of a
        step's work on a CPU.
        """
        batch = items.shape[0]
        rows, where = torch.unique(torch.cat([items, history.reshape(-1)]),
                                   return_inverse=True)
        w_u, b_u = self.item_vectors(rows, semantic)
        w_i, b_i = w_u[where[:batch]], b_u[where[:batch]]
        w_h = w_u[where[batch:]].reshape(*history.shape, -1)
        v_h = None
        if self.ctx is not None:
            v_h = self.ctx(rows)[where[batch:]].reshape(*history.shape, -1)
        return (self.user(w_h, history_mask, v_h) * w_i).sum(-1) + b_i + self.bias

    def user(self, w_h: torch.Tensor, mask: torch.Tensor, v_h: torch.Tensor | None = None
             ) -> torch.Tensor:
        """User vectors (B, dim) from history vectors (B, H, dim), newest first, 0/1 mask.

        ``v_h``: the history's context vectors (B, H, dim), pooled with the same recency
        weights. The formula of :class:`worker.learning.user_tower.UserTower`, which
        serving evaluates in numpy from the published parameters.
        """
        h = min(w_h.shape[1], self.recency.shape[0])
        w_h, mask = w_h[:, :h], mask[:, :h].to(w_h.dtype)
        r = self.recency[:h]
        e = torch.exp(r - r.max()) * mask
        pooled = (e.unsqueeze(-1) * w_h).sum(1) / e.sum(1, keepdim=True).clamp(min=1e-12)
        user = self.user_prior + pooled @ self.context.T
        if v_h is not None:
            user = user + (e.unsqueeze(-1) * v_h[:, :h]).sum(1) / e.sum(1, keepdim=True).clamp(
                min=1e-12)
        if h:
            user = user + mask[:, :1] * (w_h[:, 0] @ self.last.T)
        return user

    def row_parameters(self) -> list[torch.Tensor]:
        """Dense parameters that every published item row depends on.

        A change to one of them changes every row; the user prior is not one (it travels
        in the version's metadata).
        """
        return [self.proj.weight, self.proj.bias, self.alpha, self.bias]

    @torch.no_grad()
    def export(self, n_items: int, semantic: torch.Tensor) -> np.ndarray:
        """Serving rows ``[w_i, b_i + b0(, v_i)]`` for rows ``0..n_items-1``, float32."""
        return self.export_rows(np.arange(n_items), semantic)

    @torch.no_grad()
    def export_rows(self, rows_np: np.ndarray, semantic: torch.Tensor) -> np.ndarray:
        """Serving vectors of the given rows, in their order (see :meth:`export`).

        In chunks: gathering a million rows' text vectors at once would copy 1.5 GB.
        """
        out = np.empty((len(rows_np), self.width), np.float32)
        for start in range(0, len(rows_np), 65536):
            rows = torch.as_tensor(rows_np[start:start + 65536], dtype=torch.long,
                                   device=semantic.device)
            w, b = self.item_vectors(rows, semantic)
            parts = [w, (b + self.bias).unsqueeze(-1)]
            if self.ctx is not None:
                parts.append(self.ctx(rows))
            part = torch.cat(parts, dim=-1)
            out[start:start + len(rows)] = part.float().cpu().numpy()
        return out

    def prior(self) -> np.ndarray:
        """The user prior ``u0`` as float32 (dim,)."""
        return self.user_prior.detach().float().cpu().numpy()

    def tower(self) -> UserTower:
        """The user tower's parameters as published (float32, on the CPU)."""
        def arr(p: torch.Tensor) -> np.ndarray:
            return p.detach().float().cpu().numpy()
        return UserTower(arr(self.user_prior), arr(self.recency), arr(self.context),
                         arr(self.last), context_vectors=self.ctx is not None)
