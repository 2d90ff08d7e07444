"""Replay buffers: a recent window for fresh signal and a reservoir for long-term memory.

Fine-tuning only on the newest samples forgets what was learnt before (catastrophic
forgetting); training on a mix of a recent window and a uniform sample of all history keeps
both. The reservoir is Vitter's Algorithm R: after ``n`` offers every sample seen is in it
with probability ``capacity / n``.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from consumers.columns import HOLDOUT_BUCKETS, Columns, RowIndex, SampleRows
from consumers.events import Sample, sample_from_list, sample_to_list

__all__ = ["RecentWindow", "ReplayBuffers", "Reservoir", "draw_mix"]


class RecentWindow:
    """The newest ``capacity`` samples, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.items: deque[Sample] = deque(maxlen=capacity)
        self.added = 0  # ring position: sample k lives in slot k % capacity

    def __len__(self) -> int:
        return len(self.items)

    def add(self, sample: Sample) -> int:
        """Append one sample (O(1)); returns its slot in the ring."""
        self.items.append(sample)
        slot = self.added % self.capacity
        self.added += 1
        return slot

    def newest_slots(self, n: int) -> np.ndarray:
        """Ring slots of the newest ``n`` samples, oldest first."""
        return (self.added - n + np.arange(n)) % self.capacity


class Reservoir:
    """A uniform random sample of everything ever offered (Algorithm R), seeded."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.items: list[Sample] = []
        self.seen = 0
        self._rng = random.Random(seed)
        # Checkpoint marks: every write takes the next number and its slot remembers it, so
        # the slots written since a mark are what a delta checkpoint holds.
        self.writes = 0
        self.slot_write = np.zeros(capacity, np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, sample: Sample) -> int | None:
        """Offer one sample; it replaces a random slot with probability ``capacity / seen``.

        Returns the slot it went to, or None if it was not kept.
        """
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(sample)
            j = len(self.items) - 1
        else:
            j = self._rng.randrange(self.seen)
            if j >= self.capacity:
                return None
            self.items[j] = sample
        self.writes += 1
        self.slot_write[j] = self.writes
        return j

    def rng_state(self) -> Any:
        """The generator state, so a restored reservoir continues the same random sequence."""
        return self._rng.getstate()

    def set_rng_state(self, state: Any) -> None:
        """Restore a state from :meth:`rng_state`."""
        self._rng.setstate(state)


class ReplayBuffers:
    """Recent window + reservoir, fed together and sampled in a configurable mix.

    Args:
        recent_capacity: size of the recent window.
        reservoir_capacity: size of the reservoir over all history.
        recent_share: fraction of each mixed batch drawn from the recent window.
        seed: seeds both the reservoir and the batch sampler.
        history_len: history width of the integer columns.
        index: item id -> row, shared with the trainer's item table (default: its own).

    Beside the samples, both buffers keep preallocated integer columns
    (:class:`consumers.columns.SampleRows`) written when a sample is added, so a training
    batch is a vectorised gather (:meth:`sample_rows`), not a loop over strings.
    """

    def __init__(self, recent_capacity: int = 50_000, reservoir_capacity: int = 50_000,
                 recent_share: float = 0.5, seed: int = 0, history_len: int = 10,
                 index: RowIndex | None = None) -> None:
        if not 0.0 <= recent_share <= 1.0:
            raise ValueError("recent_share must be in [0, 1]")
        self.recent = RecentWindow(recent_capacity)
        self.reservoir = Reservoir(reservoir_capacity, seed)
        self.recent_share = recent_share
        self._rng = random.Random(seed + 1)
        self._np_rng = np.random.default_rng(seed + 2)
        self.index = RowIndex() if index is None else index
        self.recent_rows = SampleRows(recent_capacity, history_len)
        self.reservoir_rows = SampleRows(reservoir_capacity, history_len)

    def __len__(self) -> int:
        return len(self.recent) + len(self.reservoir)

    def add(self, sample: Sample) -> None:
        """Put one sample into both buffers (and its rows into their columns)."""
        self.recent_rows.put(self.recent.add(sample), sample, self.index)
        slot = self.reservoir.add(sample)
        if slot is not None:
            self.reservoir_rows.put(slot, sample, self.index)

    def sample_rows(self, n: int, recent_share: float | None = None,
                    holdout_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`sample`, as columns: (item rows, history rows padded -1, labels).

        Samples of held-out requests (``holdout_share`` of the request buckets) are
        dropped after drawing, so a batch is about ``n * (1 - holdout_share)`` long.
        """
        share = self.recent_share if recent_share is None else recent_share
        n_new, n_old = len(self.recent), len(self.reservoir)
        cut = int(holdout_share * HOLDOUT_BUCKETS)
        if not n_new and not n_old:
            width = self.recent_rows.history_len
            return (np.zeros(0, np.int32), np.zeros((0, width), np.int32),
                    np.zeros(0, np.int8))
        n_recent = round(n * share) if n_new and n_old else (n if n_new else 0)
        draw = self._np_rng.integers
        a = self.recent_rows.gather(draw(n_new or 1, size=n_recent), cut)
        b = self.reservoir_rows.gather(draw(n_old or 1, size=n - n_recent), cut)
        return (np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]),
                np.concatenate([a[2], b[2]]))

    def draw_columns(self, n: int) -> tuple[Columns, Columns]:
        """``n`` random slots of each buffer, every column (bucket too), copied.

        For a training cycle that runs beside ingestion: it draws from these instead of
        the live buffers, which ingestion keeps writing.
        """
        draw = self._np_rng.integers
        out = []
        for rows, size in ((self.recent_rows, len(self.recent)),
                           (self.reservoir_rows, len(self.reservoir))):
            slots = draw(size, size=n) if size else np.zeros(0, np.int64)
            out.append(rows.columns(slots))
        return out[0], out[1]

    def recent_columns(self) -> Columns:
        """The recent window's columns in arrival order (oldest first), copied."""
        return self.recent_rows.columns(self.recent.newest_slots(len(self.recent)))

    def newest_columns(self, samples: Sequence[Sample]) -> Columns | None:
        """The columns of ``samples`` if they are the newest ones added, in order; else None.

        A cycle's fresh samples are exactly that (ingestion adds each to the buffers as it
        hands it to the trainer), so their integer rows are read from the recent ring instead
        of converted again; None (convert them) when they are not all still in the window.
        """
        recent, n = self.recent, len(samples)
        if n > len(recent.items):
            return None
        newest = itertools.islice(reversed(recent.items), n)
        if not all(a is b for a, b in zip(newest, reversed(samples), strict=True)):
            return None
        return self.recent_rows.columns(recent.newest_slots(n))

    def sample(self, n: int, recent_share: float | None = None) -> list[Sample]:
        """Draw ``n`` samples with replacement: ``recent_share`` of them from the recent window.

        If one buffer is empty the whole batch comes from the other; empty buffers give [].
        """
        share = self.recent_share if recent_share is None else recent_share
        return draw_mix(self.recent.items, self.reservoir.items, n, share, self._rng)

    def marks(self) -> dict[str, int]:
        """Where the buffers stand: what :meth:`state_dict` of a later delta starts after."""
        return {"items": self.index.clock, "recent": self.recent.added,
                "reservoir": self.reservoir.writes}

    def state_dict(self, since: dict[str, int] | None = None) -> dict[str, Any]:
        """A JSON-serialisable copy of both buffers, the random states and the item rows.

        ``since`` (:meth:`marks` at an earlier checkpoint): only what changed after it,
        so the size follows the new samples, not the buffers: the samples added to the
        recent window since, the reservoir slots written since, the item rows given out
        since.
        """
        index, recent, reservoir = self.index, self.recent, self.reservoir
        out: dict[str, Any] = {
            "seen": reservoir.seen, "recent_added": recent.added,
            "reservoir_writes": reservoir.writes, "reservoir_len": len(reservoir.items),
            "reservoir_rng": _rng_to_json(reservoir.rng_state()),
            "sampler_rng": _rng_to_json(self._rng.getstate()), "item_clock": index.clock}
        if since is None:
            return {**out, "item_ids": list(index.ids),
                    "recent": [sample_to_list(s) for s in recent.items],
                    "reservoir": [sample_to_list(s) for s in reservoir.items]}
        rows = index.created_since(since["items"])
        new = min(recent.added - since["recent"], len(recent.items))
        slots = np.flatnonzero(reservoir.slot_write[: len(reservoir.items)] > since["reservoir"])
        return {**out, "delta": True, "item_rows": rows.tolist(),
                "item_ids": [index.ids[r] for r in rows],
                "recent": [sample_to_list(recent.items[k]) for k in
                           range(len(recent.items) - new, len(recent.items))],
                "reservoir_slots": slots.tolist(),
                "reservoir": [sample_to_list(reservoir.items[k]) for k in slots]}

    def load_samples(self, state: dict[str, Any]) -> None:
        """Restore (or, from a delta, update) both buffers' samples; columns not rebuilt."""
        recent, reservoir = self.recent, self.reservoir
        if not state.get("delta"):
            recent.items.clear()
            reservoir.items = []
        recent.items.extend(sample_from_list(s) for s in state["recent"])
        for slot, fields in zip(state.get("reservoir_slots", range(len(state["reservoir"]))),
                                state["reservoir"], strict=True):
            if slot == len(reservoir.items):
                reservoir.items.append(sample_from_list(fields))
            else:
                reservoir.items[slot] = sample_from_list(fields)
        recent.added = int(state.get("recent_added", len(recent.items)))
        reservoir.seen = int(state["seen"])
        reservoir.writes = int(state.get("reservoir_writes", 0))
        reservoir.set_rng_state(_rng_from_json(state["reservoir_rng"]))
        self._rng.setstate(_rng_from_json(state["sampler_rng"]))

    def load_items(self, state: dict[str, Any]) -> None:
        """Restore (or, from a delta, update) the item rows of :meth:`state_dict`."""
        clock = int(state.get("item_clock", 0))
        if "item_rows" in state:
            self.index.assign(state["item_rows"], state["item_ids"], clock)
        else:
            self.index.reset(state["item_ids"], clock)

    def referenced_rows(self) -> np.ndarray:
        """Item rows some buffered sample is about (these are never evicted)."""
        return np.unique(np.concatenate([self.recent_rows.item[: len(self.recent)],
                                         self.reservoir_rows.item[: len(self.reservoir)]]))

    def drop_history_rows(self, rows: np.ndarray) -> None:
        """Evicted items leave the buffered histories (their entries become padding)."""
        for cols, size in ((self.recent_rows, len(self.recent)),
                           (self.reservoir_rows, len(self.reservoir))):
            hist = cols.hist[:size]
            hist[np.isin(hist, rows)] = -1

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Apply :meth:`state_dict` output (whole, or a delta) and rebuild the columns."""
        self.load_items(state)
        self.load_samples(state)
        self.rebuild_columns()

    def rebuild_columns(self) -> None:
        """Rewrite both buffers' integer columns from their samples (after a restore).

        A recent sample goes to the ring slot it had (sample k in slot k % capacity).
        """
        recent = self.recent
        slots = recent.newest_slots(len(recent.items)).tolist()
        for slot, sample in zip(slots, recent.items, strict=True):
            self.recent_rows.put(slot, sample, self.index, restoring=True)
        self.reservoir.slot_write[:] = 0  # restored slots are older than any later mark
        for slot, sample in enumerate(self.reservoir.items):
            self.reservoir_rows.put(slot, sample, self.index, restoring=True)


def draw_mix(recent: Sequence[Sample], old: Sequence[Sample], n: int, share: float,
             rng: random.Random) -> list[Sample]:
    """``n`` samples with replacement, ``share`` of them from ``recent``.

    If one list is empty all come from the other; [] if both are.
    """
    if not recent and not old:
        return []
    n_recent = round(n * share) if recent and old else (n if recent else 0)
    pick = rng.randrange
    out = [recent[pick(len(recent))] for _ in range(n_recent)]
    out.extend(old[pick(len(old))] for _ in range(n - n_recent))
    return out


def _rng_to_json(state: Any) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state: list[Any]) -> Any:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
