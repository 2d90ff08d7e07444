"""Paced traffic: drive a simulator at a request rate (CLI ``simulate`` and the demo)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from worker.tools.simulate import Simulator

__all__ = ["Pace", "drive"]


class Pace:
    """A request rate that another thread may change while :func:`drive` runs.

    The demo lowers it when the worker falls behind and raises it back towards ``target``
    when the worker keeps up, so the loop is sized to the machine.
    """

    def __init__(self, target: float, floor: float = 10.0) -> None:
        self.target = target
        self.floor = min(floor, target)
        self.rate = target

    def adapt(self, lag: int, window_s: float) -> float:
        """Adjust to the backlog seen over the last ``window_s``; returns the new rate."""
        if lag > 2 * self.rate * window_s:  # more than two windows of traffic waiting
            self.rate = max(self.floor, self.rate * 0.7)
        elif lag < self.rate * window_s / 2:
            self.rate = min(self.target, self.rate * 1.15)
        return self.rate


def drive(sim: Simulator, rate: float | Pace, flush: Callable[[], None], *,
          requests: int | None = None, stop: threading.Event | None = None,
          flush_every: int = 500) -> int:
    """Serve requests at ``rate`` per second until ``requests`` are done or ``stop`` is set.

    Blocks. A slow request is caught up by the next ones (up to one second of debt) rather
    than lowering the rate. ``flush`` runs every ``flush_every`` requests and at the end.
    Returns the number of requests served.
    """
    pace = rate if isinstance(rate, Pace) else Pace(rate, floor=rate)
    due, n = time.monotonic(), 0
    while (requests is None or n < requests) and not (stop is not None and stop.is_set()):
        sim.step()
        n += 1
        now = time.monotonic()
        due = max(due + 1.0 / pace.rate, now - 1.0)
        if due > now:
            time.sleep(due - now)
        if n % flush_every == 0:
            flush()
    flush()
    return n
