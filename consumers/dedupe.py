"""Drop redelivered events by ``event_id`` within a bounded window of time and count."""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import Any

__all__ = ["Deduper"]


class Deduper:
    """Remembers recent event ids, bounded both by count and by event-time age.

    At-least-once delivery redelivers events after a crash or rebalance; they arrive close
    to their first delivery, so a window of recent ids is enough, and its bounds keep
    memory flat however long the stream runs.

    Args:
        max_ids: most ids kept; the oldest is forgotten first.
        window_ms: ids whose event time is older than the newest seen minus this are forgotten.

    >>> d = Deduper(max_ids=2, window_ms=1000)
    >>> d.seen_before("a", 0), d.seen_before("a", 10), d.seen_before("b", 20)
    (False, True, False)
    >>> d.seen_before("c", 30); d.trim(); len(d)
    False
    2
    """

    def __init__(self, max_ids: int = 1_000_000, window_ms: int = 3_600_000) -> None:
        if max_ids < 1 or window_ms < 0:
            raise ValueError("max_ids must be >= 1 and window_ms >= 0")
        self.max_ids = max_ids
        self.window_ms = window_ms
        self._ids: OrderedDict[str, int] = OrderedDict()
        self._newest_ts = 0
        self.added = 0  # ids ever remembered: a checkpoint mark (the newest sit at the end)
        self.evicted = 0  # ids forgotten by the count bound while still inside the window

    def __len__(self) -> int:
        return len(self._ids)

    def seen_before(self, event_id: str, ts: int) -> bool:
        """Return True if ``event_id`` was seen inside the window; otherwise remember it."""
        ids = self._ids
        if event_id in ids:
            return True
        ids[event_id] = ts
        self.added += 1
        if ts > self._newest_ts:
            self._newest_ts = ts
        return False

    def trim(self) -> None:
        """Forget ids beyond the count bound or older than the window (call once per batch)."""
        ids = self._ids
        while len(ids) > self.max_ids:
            ids.popitem(last=False)
            self.evicted += 1
        # Ids are mostly in event-time order, so the oldest sit at the front; stop at the first
        # young one rather than scanning the whole map.
        horizon = self._newest_ts - self.window_ms
        while ids:
            first_id = next(iter(ids))
            if ids[first_id] >= horizon:
                break
            del ids[first_id]

    def state_dict(self, since: int | None = None) -> dict[str, Any]:
        """A JSON-serialisable copy of the window, or only what changed since mark ``since``.

        ``since`` is an earlier :attr:`added`. The window is first in, first out, so the
        change is the ids remembered since (at its end) and how long it is now (the front
        it dropped): the size of the delta follows the new events, not the window.
        """
        new = None if since is None else self.added - since
        if new is None or new > len(self._ids):
            return {"ids": list(self._ids.keys()), "ts": list(self._ids.values()),
                    "newest_ts": self._newest_ts, "added": self.added}
        tail = list(islice(reversed(self._ids.items()), new))[::-1]
        return {"delta": True, "ids": [k for k, _ in tail], "ts": [v for _, v in tail],
                "len": len(self._ids), "newest_ts": self._newest_ts, "added": self.added}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the window with one from :meth:`state_dict`, or apply a delta of it."""
        if state.get("delta"):
            self._ids.update(zip(state["ids"], state["ts"], strict=True))
            while len(self._ids) > int(state["len"]):
                self._ids.popitem(last=False)
        else:
            self._ids = OrderedDict(zip(state["ids"], state["ts"], strict=True))
        self._newest_ts = int(state["newest_ts"])
        self.added = int(state.get("added", len(self._ids)))
