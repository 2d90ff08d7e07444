"""Group-sequential test with alpha spending: continuous monitoring at the nominal level.

The always-valid mSPRT (:class:`worker.experiments.stats.SequentialTest`) holds its level
over an unbounded horizon, which makes it conservative over any finite one: at alpha 0.05
an A/A experiment watched for its planned duration is called significant about 1% of the
time, and real effects take longer to show. When the horizon is planned (an impression
budget), the Lan-DeMets alpha-spending approach spends exactly alpha by the end, however
many looks are taken and whenever they fall (Lan & DeMets 1983; Jennison & Turnbull,
"Group Sequential Methods", ch. 7 and 19).

At each look the information fraction ``t`` (impressions so far over the planned ones,
capped at 1) sets how much alpha may have been spent, ``f(t) = 2 - 2 Phi(z_{alpha/2} /
sqrt(t))`` (O'Brien-Fleming type: little early, most at the end), and the boundary is
found numerically on the B-value scale ``B(t) = Z(t) sqrt(t)``: the sub-density of paths
not yet stopped is carried on a grid, convolved with the Brownian increment between
looks, and the boundary is placed where the mass beyond it equals the alpha this look may
spend. A look is taken only when the information grew by ``min_step`` since the last one
(at most ``1 / min_step`` looks), so a statistics clock of seconds costs nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from worker.experiments.stats import _normal_quantile, normal_sf

__all__ = ["GroupSequentialTest", "obrien_fleming_spent"]

_HALF_WIDTH = 8.0  # grid of B values: [-8, 8] covers |Z| <= 8 at t = 1
_POINTS = 1601


def obrien_fleming_spent(t: float, alpha: float) -> float:
    """Alpha spent by information fraction ``t``: ``2 - 2 Phi(z_{alpha/2} / sqrt(t))``."""
    if t <= 0:
        return 0.0
    return min(alpha, 2.0 * normal_sf(_normal_quantile(1 - alpha / 2) / math.sqrt(t)))


class GroupSequentialTest:
    """Two-sided test of "no difference" watched continuously up to a planned horizon.

    Args:
        alpha: the level spent by the end of the horizon.
        min_step: the least growth of the information fraction between two looks.

    :meth:`look` with the current z statistic and information fraction returns whether
    the test has rejected; once it has, it stays rejected.
    """

    def __init__(self, alpha: float = 0.05, min_step: float = 0.01) -> None:
        self.alpha, self.min_step = alpha, min_step
        self.grid = np.linspace(-_HALF_WIDTH, _HALF_WIDTH, _POINTS)
        self.dx = float(self.grid[1] - self.grid[0])
        self.looks: list[tuple[float, float]] = []  # (information fraction, B boundary)
        self.rejected = False
        self.z_bound = math.inf  # the last look's boundary on |Z|
        self._density: np.ndarray | None = None  # sub-density of B among paths not stopped

    @property
    def t(self) -> float:
        """Information fraction of the last look (0 before the first)."""
        return self.looks[-1][0] if self.looks else 0.0

    def look(self, z: float, t: float) -> bool:
        """Take a look at ``z`` with information fraction ``t``; True once rejected."""
        t = min(max(t, 0.0), 1.0)
        if self.rejected or t - self.t < self.min_step and not (t >= 1.0 > self.t):
            return self.rejected
        bound = self._advance(t)
        self.z_bound = bound / math.sqrt(t)
        if abs(z) >= self.z_bound:
            self.rejected = True
        return self.rejected

    def _advance(self, t: float) -> float:
        """Move the grid to ``t``, place this look's boundary, truncate; the B boundary."""
        prev_t = self.t
        step = t - prev_t
        sd = math.sqrt(step)
        x = self.grid
        if self._density is None:
            density = np.exp(-0.5 * (x / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        else:
            half = int(math.ceil(8 * sd / self.dx))
            offsets = np.arange(-half, half + 1) * self.dx
            kernel = np.exp(-0.5 * (offsets / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
            kernel /= kernel.sum() * self.dx  # exact mass on the grid
            density = np.convolve(self._density, kernel, mode="same") * self.dx
        spend = (obrien_fleming_spent(t, self.alpha)
                 - obrien_fleming_spent(prev_t, self.alpha))
        # mass beyond |B| = c, for c on the grid's positive half (symmetric density)
        pos = x >= 0
        tail = np.cumsum((density[pos] * self.dx)[::-1])[::-1] * 2.0
        c_grid = x[pos]
        bound = math.inf
        if spend > 0:  # first grid point with tail <= spend, interpolated with the one before
            idx = min(int(np.searchsorted(-tail, -spend, side="left")), len(c_grid) - 1)
            bound = float(c_grid[idx])
            if idx > 0 and tail[idx - 1] > tail[idx]:
                frac = (tail[idx - 1] - spend) / (tail[idx - 1] - tail[idx])
                bound = float(c_grid[idx - 1] + frac * self.dx)
        self._density = np.where(np.abs(x) < bound, density, 0.0)
        self.looks.append((t, bound))
        return bound

    def state(self) -> dict[str, Any]:
        """Checkpoint state: the looks taken and whether it rejected."""
        return {"looks": [list(lk) for lk in self.looks], "rejected": self.rejected}

    def load(self, state: dict[str, Any]) -> None:
        """Restore by replaying the looks' boundaries (the grid follows from them)."""
        self.looks, self._density = [], None
        for t, _ in state.get("looks", []):
            self.z_bound = self._advance(float(t)) / math.sqrt(float(t))
        self.rejected = bool(state.get("rejected", False))
