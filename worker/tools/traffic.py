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

    def __init__(self, target: float, floor: float = 10.0, start: float | None = None) -> None:
        self.target = target
        self.floor = min(floor, target)
        self.rate = target if start is None else max(self.floor, min(start, target))
        self._last_lag: int | None = None

    def adapt(self, lag: int, window_s: float) -> float:
        """Adjust to the backlog (in requests) seen after ``window_s``; returns the rate.

        A backlog over one window of traffic that is not shrinking by at least a tenth of
        the window's traffic means the worker does not catch up: 30% less. A backlog
        under one window of traffic: 25% more, up to the target. A large backlog that is
        shrinking fast (a start-up backlog being worked off) changes nothing.
        """
        per_window = self.rate * window_s
        # The first look has no trend yet: give the backlog the benefit of the doubt.
        shrinking = self._last_lag is None or lag < self._last_lag - per_window / 10
        if lag > per_window and not shrinking:
            self.rate = max(self.floor, self.rate * 0.7)
        elif lag < per_window:
            self.rate = min(self.target, self.rate * 1.25)
        self._last_lag = lag
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
