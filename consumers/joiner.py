"""Join impressions with their clicks into labelled samples, in event time.

An impression waits ``window_ms`` of event time for a click or purchase with the same
``(request_id, item_id)``. A click inside the window emits a positive sample at once; an
impression whose window closes without one emits a negative. Event time advances with the
watermark. With one stream that is the newest event time seen; a caller reading several
partitions passes the minimum over partitions instead (see :mod:`consumers.pipeline`), so a
partition that is read ahead of another cannot close the other's impressions early: the
labels depend only on the events, not on how the partitions interleave. Expiry runs in
:meth:`Joiner.expire`, once per batch: closing an impression a few events later changes no
label, since a click past the window never counts.
"""

from __future__ import annotations

import heapq
from collections import Counter
from itertools import islice
from typing import Any

import msgspec

from consumers.events import BehaviourEvent, Sample

__all__ = ["JOIN_OUTCOMES", "Joiner"]

#: Every way an event can leave the joiner other than as a sample: counted, never invented.
JOIN_OUTCOMES = (
    "orphan_click",  # no impression for it was ever seen (or it was forgotten long ago)
    "late_click",  # its impression had already closed as a negative
    "click_outside_window",  # its impression was pending, but the click is past the window
    "duplicate_click",  # the impression already has its positive
    "purchase_after_click",  # a purchase of an item already clicked: the label stays 1
    "duplicate_impression",  # same (request_id, item_id) shown twice: the first one counts
)

_Key = tuple[str, str]
_Pending = tuple[BehaviourEvent, tuple[str, ...]]  # the impression, the history it saw


class Joiner:
    """Stateful impression/click joiner with per-user recent-item history.

    Args:
        window_ms: event-time attribution window after an impression (default 30 min).
        history_len: how many recent positive items of a user a sample carries.
        max_users: users whose history is kept (least recently active forgotten first).
        closed_memory: closed impression keys remembered to tell a late click from an orphan.
    """

    def __init__(self, window_ms: int = 30 * 60 * 1000, history_len: int = 10,
                 max_users: int = 200_000, closed_memory: int = 200_000) -> None:
        self.window_ms = window_ms
        self.history_len = history_len
        self.max_users = max_users
        self.closed_memory = closed_memory
        self.watermark = 0
        self.outcomes: Counter[str] = Counter()
        self.evicted: Counter[str] = Counter()  # entries dropped by the caps, by state
        # Plain dicts (insertion-ordered, faster than OrderedDict) plus a heap in event-time
        # order for expiry: partitions read unevenly (a restart drains one backlog first)
        # must not leave old impressions stuck behind newer ones. A key already joined is
        # simply skipped when popped.
        self._pending: dict[_Key, _Pending] = {}
        self._order: list[tuple[int, _Key]] = []
        self._closed: dict[_Key, bool] = {}  # key -> had a positive
        # Histories are immutable tuples: an impression just keeps a reference (no copy).
        self._history: dict[str, tuple[str, ...]] = {}

    @property
    def pending(self) -> int:
        """Impressions still inside their attribution window."""
        return len(self._pending)

    def add(self, event: BehaviourEvent, out: list[Sample]) -> None:
        """Feed one event; append the positive sample it completes, if any, to ``out``.

        Call :meth:`expire` after a batch to close impressions whose window has passed.
        """
        if event.ts > self.watermark:
            self.watermark = event.ts
        key = (event.request_id, event.item_id)
        if event.type == "impression":
            if key in self._pending or key in self._closed:
                self.outcomes["duplicate_impression"] += 1
                return
            self._pending[key] = (event, self._history.get(event.user_id, ()))
            heapq.heappush(self._order, (event.ts, key))
        else:
            self._on_positive(key, event, out)

    def expire(self, out: list[Sample], watermark: int | None = None) -> None:
        """Close impressions whose window ended before the watermark, as negatives.

        Args:
            out: receives the negative samples.
            watermark: event time known complete; default the newest event time seen.
        """
        horizon = (self.watermark if watermark is None else watermark) - self.window_ms
        pending, order = self._pending, self._order
        while order and order[0][0] < horizon:
            key = heapq.heappop(order)[1]
            pend = pending.pop(key, None)
            if pend is not None:
                self._remember_closed(key, False)
                out.append(_sample(pend[0], 0, pend[1]))
        self._trim()

    def flush(self, out: list[Sample]) -> None:
        """Close every pending impression as a negative (used at shutdown of a finite run)."""
        for key, (imp, history) in self._pending.items():
            self._remember_closed(key, False)
            out.append(_sample(imp, 0, history))
        self._pending.clear()
        self._order.clear()
        self._trim()

    def history(self, user_id: str) -> tuple[str, ...]:
        """The user's recent positive items, newest first."""
        return self._history.get(user_id, ())

    def _on_positive(self, key: _Key, event: BehaviourEvent, out: list[Sample]) -> None:
        pend = self._pending.get(key)
        if pend is None:
            had_positive = self._closed.get(key)
            if had_positive is None:
                self.outcomes["orphan_click"] += 1
            elif had_positive:
                self.outcomes["purchase_after_click" if event.type == "purchase"
                              else "duplicate_click"] += 1
            else:
                self.outcomes["late_click"] += 1
            return
        imp, history = pend
        if event.ts > imp.ts + self.window_ms:
            self.outcomes["click_outside_window"] += 1
            return
        del self._pending[key]
        self._remember_closed(key, True)
        out.append(_sample(imp, 1, history))
        self._push_history(imp.user_id, imp.item_id)

    def _remember_closed(self, key: _Key, positive: bool) -> None:
        self._closed[key] = positive

    def _push_history(self, user_id: str, item_id: str) -> None:
        hist = self._history.pop(user_id, ())  # re-insert: most recently active last
        self._history[user_id] = (item_id, *(i for i in hist if i != item_id))[
            : self.history_len]

    def _trim(self) -> None:
        # Amortised O(1): when a map outgrows its bound, keep its newest half.
        if len(self._closed) > self.closed_memory:
            self.evicted["closed_keys"] += len(self._closed) - self.closed_memory // 2
            self._closed = _newest(self._closed, self.closed_memory // 2)
        if len(self._history) > self.max_users:
            self.evicted["user_histories"] += len(self._history) - self.max_users // 2
            self._history = _newest(self._history, self.max_users // 2)

    def state_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable copy of all join state."""
        return {
            "watermark": self.watermark,
            "outcomes": dict(self.outcomes),
            "pending": [[list(msgspec.structs.astuple(imp)), list(hist)]
                        for imp, hist in self._pending.values()],
            "closed": [[k[0], k[1], v] for k, v in self._closed.items()],
            "history": {u: list(h) for u, h in self._history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace all join state with one produced by :meth:`state_dict`."""
        self.watermark = int(state["watermark"])
        self.outcomes = Counter(state["outcomes"])
        self._pending, self._order = {}, []
        for fields, history in state["pending"]:
            ev = BehaviourEvent(*fields)
            key = (ev.request_id, ev.item_id)
            self._pending[key] = (ev, tuple(history))
            self._order.append((ev.ts, key))
        heapq.heapify(self._order)
        self._closed = {(r, i): bool(v) for r, i, v in state["closed"]}
        self._history = {u: tuple(h) for u, h in state["history"].items()}


def _newest(d: dict[Any, Any], n: int) -> dict[Any, Any]:
    return dict(islice(d.items(), len(d) - n, None))


def _sample(imp: BehaviourEvent, label: int, history: tuple[str, ...]) -> Sample:
    return Sample(imp.ts, imp.user_id, imp.item_id, label, imp.arm, imp.request_id,
                  imp.position, imp.propensity, history)
