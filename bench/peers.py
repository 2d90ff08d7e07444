"""What a team would run instead of freshrec, as peers of the real-data bench.

Every peer sees the same stream as freshrec: each impression's outcome in time order
(:meth:`Peer.learn`), and is asked to score the whole catalog for a user just before that
user's next positive is learnt. *Online* peers change with every outcome, so they are asked
one query at a time; the others change only when they refit (:meth:`Peer.sync`), so their
queries are scored in batches between refits, which gives the same answers faster.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from scipy import sparse
from torch import nn
from typing_extensions import override


class Peer:
    """A recommender under test-then-train evaluation."""

    name = "peer"
    online = True

    def __init__(self, n_users: int, n_items: int) -> None:
        self.n_users, self.n_items = n_users, n_items

    def learn(self, user: int, item: int, label: int) -> None:
        """One impression's outcome (1 = clicked), in stream order."""

    def sync(self, positives: int) -> None:
        """A refit point (``positives`` learnt so far); online peers need none."""

    def score_batch(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """Scores (len(users), n_items); ``histories`` are each user's positives, oldest first."""
        raise NotImplementedError


class Popularity(Peer):
    """Positives per item; with ``half_life`` (in positives) recent ones weigh more."""

    def __init__(self, n_users: int, n_items: int, half_life: float | None = None) -> None:
        super().__init__(n_users, n_items)
        self.name = "popularity, all-time" if half_life is None else \
            f"popularity, decayed (half-life {half_life:g} positives)"
        self.counts = np.zeros(n_items)
        self.growth = 1.0 if half_life is None else 2 ** (1 / half_life)
        self.weight = 1.0

    @override
    def learn(self, user: int, item: int, label: int) -> None:
        if label:
            self.counts[item] += self.weight
            self.weight *= self.growth
            if self.weight > 1e100:  # rescale: only ratios matter
                self.counts /= self.weight
                self.weight = 1.0

    @override
    def score_batch(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), self.n_items))


class Transitions(Peer):
    """Item-to-item transition counts from each of a user's last ``k`` positives."""

    def __init__(self, n_users: int, n_items: int, k: int = 3) -> None:
        super().__init__(n_users, n_items)
        self.name, self.k = f"item-to-item transitions (last {k} positives)", k
        self.counts = np.zeros((n_items, n_items), np.float32)
        self.popular = np.zeros(n_items, np.float32)
        self.last: dict[int, list[int]] = defaultdict(list)

    @override
    def learn(self, user: int, item: int, label: int) -> None:
        if not label:
            return
        recent = self.last[user]
        for prev in recent:
            self.counts[prev, item] += 1.0
        self.popular[item] += 1.0
        recent.append(item)
        del recent[:-self.k]

    @override
    def score_batch(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(users), self.n_items), np.float32)
        tie = self.popular / max(self.popular.sum(), 1.0) * 1e-3  # break ties by popularity
        for k, hist in enumerate(histories):
            out[k] = self.counts[hist[-self.k:]].sum(0) + tie
        return out


class RiverMF(Peer):
    """River's ``FunkMF``, learning online from every impression (clicked = 1, else 0)."""

    def __init__(self, n_users: int, n_items: int, factors: int = 32, seed: int = 0) -> None:
        from river import optim, reco  # noqa: PLC0415 - a bench-only dependency

        super().__init__(n_users, n_items)
        self.name = f"River FunkMF ({factors} factors), online"
        self.model = reco.FunkMF(n_factors=factors, optimizer=optim.SGD(0.05), l2=0.001,
                                 initializer=optim.initializers.Normal(0.0, 0.1, seed=seed))
        # A mirror of River's item latents, kept exact after every step, for fast scoring.
        self.items = np.stack([self.model.i_latents[i] for i in range(n_items)])

    @override
    def learn(self, user: int, item: int, label: int) -> None:
        self.model.learn_one(user, item, float(label))  # type: ignore[no-untyped-call]
        self.items[item] = self.model.i_latents[item]

    @override
    def score_batch(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.items @ self.model.u_latents[int(u)] for u in users])


class ALSRefit(Peer):
    """implicit's ALS, refit on every positive so far every ``every`` positives."""

    online = False

    def __init__(self, n_users: int, n_items: int, every: int = 2000, factors: int = 64) -> None:
        super().__init__(n_users, n_items)
        self.name = f"implicit ALS ({factors} factors), refit every {every:,} positives"
        self.every, self.factors, self.done = every, factors, 0
        self.pairs: list[tuple[int, int]] = []
        self.user_f = np.zeros((n_users, factors), np.float32)
        self.item_f = np.zeros((n_items, factors), np.float32)
        self.model: Any = None

    @override
    def learn(self, user: int, item: int, label: int) -> None:
        if label:
            self.pairs.append((user, item))

    @override
    def sync(self, positives: int) -> None:
        if positives - self.done < self.every or not self.pairs:
            return
        from implicit.cpu.als import AlternatingLeastSquares  # noqa: PLC0415

        self.done = positives
        rows, cols = zip(*self.pairs, strict=True)
        matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                   shape=(self.n_users, self.n_items))
        matrix.data[:] = 1.0  # a repeated positive counts once
        model = AlternatingLeastSquares(factors=self.factors, regularization=0.05,
                                        iterations=15, random_state=0)
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - implicit's own advice

        with threadpool_limits(1, "blas"):
            model.fit(matrix, show_progress=False)
        self.model = model
        self.user_f, self.item_f = np.asarray(model.user_factors), np.asarray(model.item_factors)

    @override
    def score_batch(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """Item factors of the last fit, each user's solved afresh from their positives.

        implicit's ``recalculate_user``, as a serving ALS does: a user new since the fit,
        or with positives since, is not scored from stale factors.
        """
        if self.model is None:
            return np.zeros((len(users), self.n_items), np.float32)
        rows = []
        for hist in histories:
            items = np.unique(hist)
            row = sparse.csr_matrix((np.ones(len(items), np.float32),
                                     (np.zeros(len(items), np.int64), items)),
                                    shape=(1, self.n_items))
            rows.append(np.asarray(self.model.recalculate_user(0, row)).ravel())
        scores: np.ndarray = np.stack(rows) @ self.item_f.T
        return scores


class _SASRec(nn.Module):
    """Self-attentive sequential recommendation (Kang & McAuley 2018), full-softmax loss."""

    def __init__(self, n_items: int, dim: int, max_len: int, blocks: int, dropout: float
                 ) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)  # row 0: padding
        self.positions = nn.Embedding(max_len, dim)
        # Small rows, as SASRec's own code starts them: torch's N(0, 1) times sqrt(dim)
        # makes the first logits ~64 and the fit never recovers (offline hit@10 0.077).
        for table in (self.items, self.positions):
            nn.init.normal_(table.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 1, dim, dropout, batch_first=True, norm_first=True)
            for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    @override
    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, dim) of left-padded item sequences (B, L), causally.

        As in SASRec, padding positions are zero vectors after every block (no key mask:
        a fully masked row would make NaNs that spread through the residuals).
        """
        length = seq.shape[1]
        keep = (seq != 0).unsqueeze(-1).to(torch.float32)
        x = self.items(seq) * self.items.embedding_dim ** 0.5 + self.positions.weight[:length]
        causal = torch.triu(torch.full((length, length), float("-inf")), 1)
        h = self.drop(x) * keep
        for block in self.blocks:
            h = block(h, src_mask=causal) * keep
        out: torch.Tensor = self.norm(h)
        return out


class SASRecRefit(Peer):
    """A SASRec-style model refit (warm-started) on every sequence so far, periodically."""

    online = False

    def __init__(self, n_users: int, n_items: int, every: int = 5000, dim: int = 64,
                 max_len: int = 50, epochs: int = 20, warm_epochs: int = 5, seed: int = 0
                 ) -> None:
        super().__init__(n_users, n_items)
        torch.manual_seed(seed)
        self.name = (f"SASRec (2 blocks, {dim}-d, last {max_len} positives), refit every "
                     f"{every:,} positives, warm-started")
        self.every, self.max_len, self.done = every, max_len, 0
        self.epochs, self.warm_epochs = epochs, warm_epochs
        self.model = _SASRec(n_items, dim, max_len, 2, 0.2)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.seqs: dict[int, list[int]] = defaultdict(list)
        self.fitted = False

    @override
    def learn(self, user: int, item: int, label: int) -> None:
        if label:
            self.seqs[user].append(item + 1)

    def _padded(self, seqs: list[list[int]], length: int) -> torch.Tensor:
        out = np.zeros((len(seqs), length), np.int64)
        for k, s in enumerate(seqs):
            tail = s[-length:]
            if tail:
                out[k, -len(tail):] = tail
        return torch.as_tensor(out)

    @override
    def sync(self, positives: int) -> None:
        if positives - self.done < self.every:
            return
        epochs = self.warm_epochs if self.fitted else self.epochs  # warm-started after the first
        self.done, self.fitted = positives, True
        seqs = [s for s in self.seqs.values() if len(s) >= 2]
        data = self._padded(seqs, self.max_len + 1)
        inputs, targets = data[:, :-1], data[:, 1:]
        self.model.train()
        for _ in range(epochs):
            for idx in torch.split(torch.randperm(len(data)), 128):
                hidden = self.model(inputs[idx])
                logits = hidden @ self.model.items.weight[1:].T
                want = targets[idx] - 1
                keep = want >= 0
                loss = nn.functional.cross_entropy(logits[keep], want[keep])
                self.opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                self.opt.step()
        self.model.eval()

    @override
    @torch.no_grad()
    def score_batch(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        if not self.fitted:
            return np.zeros((len(users), self.n_items), np.float32)
        seqs = [list(map(int, h + 1)) for h in histories]
        hidden = self.model(self._padded(seqs, self.max_len))[:, -1]
        scores: np.ndarray = (hidden @ self.model.items.weight[1:].T).numpy()
        return scores

