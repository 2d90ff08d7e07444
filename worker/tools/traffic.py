"""Paced traffic: drive a simulator at a fixed request rate (CLI ``simulate`` and the demo)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from worker.tools.simulate import Simulator

__all__ = ["drive"]


def drive(sim: Simulator, rate: float, flush: Callable[[], None], *,
          requests: int | None = None, stop: threading.Event | None = None,
          flush_every: int = 500) -> int:
    """Serve requests at ``rate`` per second until ``requests`` are done or ``stop`` is set.

    Blocks. Pacing is against the start time, so a slow request is caught up by the next
    ones rather than lowering the rate. ``flush`` runs every ``flush_every`` requests and at
    the end. Returns the number of requests served.
    """
    start, n = time.monotonic(), 0
    while (requests is None or n < requests) and not (stop is not None and stop.is_set()):
        sim.step()
        n += 1
        ahead = n / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        if n % flush_every == 0:
            flush()
    flush()
    return n
