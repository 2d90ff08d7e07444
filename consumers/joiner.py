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
from collections.abc import Iterable
from itertools import islice
from typing import Any

import msgspec

from consumers.events import BehaviourEvent, Sample

__all__ = ["JOIN_OUTCOMES", "Joiner", "Part"]

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
Part = tuple[str, int] | None  # the (topic, partition) an impression was read from
# The impression, the history it saw, and its partition (whose next owner it moves to).
_Pending = tuple[BehaviourEvent, tuple[str, ...], Part]


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
        # Marks for delta checkpoints: keys ever closed, and history updates so far with
        # the update number of each user's last one (same order as ``_history``).
        self.closed_added = 0
        self.history_pushes = 0
        self._pushed_at: dict[str, int] = {}

    @property
    def pending(self) -> int:
        """Impressions still inside their attribution window."""
        return len(self._pending)

    def add(self, event: BehaviourEvent, out: list[Sample], part: Part = None) -> None:
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
            self._pending[key] = (event, self._history.get(event.user_id, ()), part)
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
        for key, (imp, history, _) in self._pending.items():
            self._remember_closed(key, False)
            out.append(_sample(imp, 0, history))
        self._pending.clear()
        self._order.clear()
        self._trim()

    def labels(self) -> tuple[dict[_Key, bool], set[_Key]]:
        """Closed keys remembered with whether each had a positive, and the pending keys."""
        return dict(self._closed), set(self._pending)

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
        imp, history, _ = pend
        if event.ts > imp.ts + self.window_ms:
            self.outcomes["click_outside_window"] += 1
            return
        del self._pending[key]
        self._remember_closed(key, True)
        out.append(_sample(imp, 1, history))
        self._push_history(imp.user_id, imp.item_id)

    def _remember_closed(self, key: _Key, positive: bool) -> None:
        self._closed[key] = positive
        self.closed_added += 1

    def _push_history(self, user_id: str, item_id: str) -> None:
        hist = self._history.pop(user_id, ())  # re-insert: most recently active last
        self._set_history(user_id, (item_id, *(i for i in hist if i != item_id))[
            : self.history_len])

    def _set_history(self, user_id: str, hist: tuple[str, ...]) -> None:
        """Store a user's history as the most recently active, stamped for the next delta."""
        self._history.pop(user_id, None)
        self._history[user_id] = hist
        self.history_pushes += 1
        self._pushed_at.pop(user_id, None)
        self._pushed_at[user_id] = self.history_pushes

    def _trim(self) -> None:
        # Amortised O(1): when a map outgrows its bound, keep its newest half.
        if len(self._closed) > self.closed_memory:
            self.evicted["closed_keys"] += len(self._closed) - self.closed_memory // 2
            self._closed = _newest(self._closed, self.closed_memory // 2)
        if len(self._history) > self.max_users:
            self.evicted["user_histories"] += len(self._history) - self.max_users // 2
            self._history = _newest(self._history, self.max_users // 2)
            self._pushed_at = _newest(self._pushed_at, self.max_users // 2)

    def handovers(self, parts: Iterable[Part]
                  ) -> dict[Part, tuple[list[Any], dict[str, tuple[str, ...]]]]:
        """Per partition: its pending impressions as data, and their users' histories.

        What a partition's next owner needs to label them (:meth:`adopt` takes it back);
        one pass over the pending impressions for all ``parts``.
        """
        out: dict[Part, tuple[list[Any], dict[str, tuple[str, ...]]]] = {
            part: ([], {}) for part in parts}
        for imp, hist, part in self._pending.values():
            if part in out:
                rows, histories = out[part]
                rows.append((msgspec.structs.astuple(imp), hist, part))
                if imp.user_id in self._history:
                    histories[imp.user_id] = self._history[imp.user_id]
        return out

    def release(self, part: Part) -> int:
        """Forget ``part``'s pending impressions (its new owner labels them); how many."""
        keys = [key for key, pend in self._pending.items() if pend[2] == part]
        for key in keys:
            del self._pending[key]  # its entry in the expiry heap is skipped when popped
        return len(keys)

    def adopt(self, rows: list[Any], histories: dict[str, Any]) -> int:
        """Take over pending impressions (rows of :meth:`handover`); how many were new.

        Impressions already pending or closed here are kept as they are.
        """
        for user, hist in histories.items():  # newer than any here: the user's events are
            self._set_history(user, tuple(hist))  # all on that partition
        added = 0
        for row in rows:
            ev = BehaviourEvent(*row[0])
            key = (ev.request_id, ev.item_id)
            if key in self._pending or key in self._closed:
                continue
            part = (row[2][0], int(row[2][1])) if len(row) > 2 and row[2] else None
            self._pending[key] = (ev, tuple(row[1]), part)
            heapq.heappush(self._order, (ev.ts, key))
            added += 1
        self._trim()
        return added

    def marks(self) -> dict[str, int]:
        """Where the growing maps stand: what :meth:`state_dict` ``since`` takes."""
        return {"closed": self.closed_added, "history": self.history_pushes}

    def state_dict(self, since: dict[str, int] | None = None) -> dict[str, Any]:
        """A JSON-serialisable copy of the join state, or a delta after :meth:`marks`.

        Pending impressions (bounded by the window) are always whole. Closed keys and user
        histories grow with the stream, so a delta holds only those closed or updated since
        ``since`` (the maps are in insertion and recency order: they are the maps' tails)
        and how long each map is now; the size follows the new events, not the caps.
        """
        state: dict[str, Any] = {
            "watermark": self.watermark,
            "outcomes": dict(self.outcomes),
            "pending": [(msgspec.structs.astuple(imp), hist, part) for imp, hist, part in
                        self._pending.values()],
            "closed_added": self.closed_added, "history_pushes": self.history_pushes,
            "closed_len": len(self._closed), "history_len": len(self._history),
        }
        new_closed = None if since is None else self.closed_added - since["closed"]
        if new_closed is None or new_closed > len(self._closed):
            state["closed"] = list(self._closed.items())
        else:
            state["closed_delta"] = list(islice(reversed(self._closed.items()), new_closed))
        if since is None:
            state["history"] = list(self._history.items())
        else:
            tail = []
            for user in reversed(self._pushed_at):
                if self._pushed_at[user] <= since["history"]:
                    break
                tail.append((user, self._history[user]))
            state["history_delta"] = tail
        return state

    def load_state_dict(self, state: dict[str, Any], final: bool = True) -> None:
        """Apply :meth:`state_dict` output: a whole one replaces, a delta extends.

        A chain of checkpoints is applied base first; only the ``final`` link's pending
        impressions, watermark and outcomes are taken (they are whole in every link).
        """
        if "closed" in state:
            self._closed = {_closed_key(row): bool(row[-1]) for row in state["closed"]}
        for (r, i), v in reversed(state.get("closed_delta", [])):
            self._closed[(r, i)] = bool(v)
        _drop_oldest(self._closed, state.get("closed_len"))
        history = state.get("history", [])
        if isinstance(history, dict):  # the format before delta checkpoints of join state
            history = list(history.items())
        if "history" in state:
            self._history = {}
        for user, hist in [*history, *reversed(state.get("history_delta", []))]:
            self._history.pop(user, None)
            self._history[user] = tuple(hist)
        _drop_oldest(self._history, state.get("history_len"))
        self._pushed_at = dict.fromkeys(self._history, 0)  # the next checkpoint is whole
        self.closed_added = int(state.get("closed_added", len(self._closed)))
        self.history_pushes = int(state.get("history_pushes", 0))
        if not final:
            return
        self.watermark = int(state["watermark"])
        self.outcomes = Counter(state["outcomes"])
        self._pending, self._order = {}, []
        self.adopt(state["pending"], {})


def _closed_key(row: list[Any]) -> _Key:
    """A closed entry's key: ``[[r, i], v]``, or ``[r, i, v]`` as older checkpoints wrote."""
    return (row[0], row[1]) if len(row) == 3 else (row[0][0], row[0][1])


def _drop_oldest(d: dict[Any, Any], length: int | None) -> None:
    """Drop ``d``'s oldest entries until it holds ``length`` (None: keep all)."""
    if length is not None and len(d) > length:
        for key in list(islice(d, len(d) - int(length))):
            del d[key]


def _newest(d: dict[Any, Any], n: int) -> dict[Any, Any]:
    return dict(islice(d.items(), len(d) - n, None))


def _sample(imp: BehaviourEvent, label: int, history: tuple[str, ...]) -> Sample:
    return Sample(imp.ts, imp.user_id, imp.item_id, label, imp.arm, imp.request_id,
                  imp.position, imp.propensity, history)
