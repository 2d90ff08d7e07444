"""Replay buffers: a recent window for fresh signal and a reservoir for long-term memory.

Fine-tuning only on the newest samples forgets what was learnt before (catastrophic
forgetting); training on a mix of a recent window and a uniform sample of all history keeps
both. The reservoir is Vitter's Algorithm R: after ``n`` offers every sample seen is in it
with probability ``capacity / n``.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from consumers.events import Sample, sample_from_list, sample_to_list

__all__ = ["RecentWindow", "ReplayBuffers", "Reservoir"]


class RecentWindow:
    """The newest ``capacity`` samples, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.items: deque[Sample] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, sample: Sample) -> None:
        """Append one sample (O(1))."""
        self.items.append(sample)


class Reservoir:
    """A uniform random sample of everything ever offered (Algorithm R), seeded."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.items: list[Sample] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, sample: Sample) -> None:
        """Offer one sample; it replaces a random slot with probability ``capacity / seen``."""
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(sample)
            return
        j = self._rng.randrange(self.seen)
        if j < self.capacity:
            self.items[j] = sample

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
    """

    def __init__(self, recent_capacity: int = 50_000, reservoir_capacity: int = 50_000,
                 recent_share: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= recent_share <= 1.0:
            raise ValueError("recent_share must be in [0, 1]")
        self.recent = RecentWindow(recent_capacity)
        self.reservoir = Reservoir(reservoir_capacity, seed)
        self.recent_share = recent_share
        self._rng = random.Random(seed + 1)

    def __len__(self) -> int:
        return len(self.recent) + len(self.reservoir)

    def add(self, sample: Sample) -> None:
        """Put one sample into both buffers."""
        self.recent.add(sample)
        self.reservoir.add(sample)

    def sample(self, n: int, recent_share: float | None = None) -> list[Sample]:
        """Draw ``n`` samples with replacement: ``recent_share`` of them from the recent window.

        If one buffer is empty the whole batch comes from the other; empty buffers give [].
        """
        share = self.recent_share if recent_share is None else recent_share
        recent, old = self.recent.items, self.reservoir.items
        if not recent and not old:
            return []
        n_recent = round(n * share) if recent and old else (n if recent else 0)
        pick = self._rng.randrange
        out = [recent[pick(len(recent))] for _ in range(n_recent)]
        out.extend(old[pick(len(old))] for _ in range(n - n_recent))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable copy of both buffers and the random states."""
        return {
            "recent": [sample_to_list(s) for s in self.recent.items],
            "reservoir": [sample_to_list(s) for s in self.reservoir.items],
            "seen": self.reservoir.seen,
            "reservoir_rng": _rng_to_json(self.reservoir.rng_state()),
            "sampler_rng": _rng_to_json(self._rng.getstate()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace both buffers with the contents of :meth:`state_dict`."""
        self.recent.items.clear()
        self.recent.items.extend(sample_from_list(s) for s in state["recent"])
        self.reservoir.items = [sample_from_list(s) for s in state["reservoir"]]
        self.reservoir.seen = int(state["seen"])
        self.reservoir.set_rng_state(_rng_from_json(state["reservoir_rng"]))
        self._rng.setstate(_rng_from_json(state["sampler_rng"]))


def _rng_to_json(state: Any) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state: list[Any]) -> Any:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
