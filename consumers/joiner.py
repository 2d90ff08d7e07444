"""Join impressions with their clicks into labelled samples, in event time.

An impression waits ``window_ms`` of event time for a click or purchase with the same
``(request_id, item_id)``. A click inside the window emits a positive sample at once; an
impression whose window closes without one emits a negative. Event time advances with the
newest event seen (the watermark), so the labels depend only on the events, not on when
they were processed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from typing import Any

from consumers.events import BehaviourEvent, Sample

__all__ = ["JOIN_OUTCOMES", "Joiner"]

#: Every way an event can leave the joiner other than as a sample: counted, never invented.
JOIN_OUTCOMES = (
    "orphan_click",  # no impression for it was ever seen (or it was forgotten long ago)
    "late_click",  # its impression had already closed as a negative
    "click_outside_window",  # its impression was pending, but the click is past the window
    "duplicate_click",  # the impression already has its positive
    "duplicate_impression",  # same (request_id, item_id) shown twice: the first one counts
)

_Key = tuple[str, str]


class _Pending:
    __slots__ = ("event", "history")

    def __init__(self, event: BehaviourEvent, history: tuple[str, ...]) -> None:
        self.event = event
        self.history = history


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
        self._pending: OrderedDict[_Key, _Pending] = OrderedDict()
        self._closed: OrderedDict[_Key, bool] = OrderedDict()  # key -> had a positive
        self._history: OrderedDict[str, deque[str]] = OrderedDict()

    @property
    def pending(self) -> int:
        """Impressions still inside their attribution window."""
        return len(self._pending)

    def add(self, event: BehaviourEvent, out: list[Sample]) -> None:
        """Feed one event; append any samples it completes (or expires) to ``out``."""
        if event.ts > self.watermark:
            self.watermark = event.ts
            self._expire(out)
        key = (event.request_id, event.item_id)
        if event.type == "impression":
            self._on_impression(key, event)
        else:
            self._on_positive(key, event, out)

    def flush(self, out: list[Sample]) -> None:
        """Close every pending impression as a negative (used at shutdown of a finite run)."""
        self.watermark = max(self.watermark, 1 << 62)
        self._expire(out)

    def history(self, user_id: str) -> tuple[str, ...]:
        """The user's recent positive items, newest first."""
        got = self._history.get(user_id)
        return tuple(got) if got else ()

    def _on_impression(self, key: _Key, event: BehaviourEvent) -> None:
        if key in self._pending or key in self._closed:
            self.outcomes["duplicate_impression"] += 1
            return
        if event.ts + self.window_ms < self.watermark:
            # Arrived after its own window closed: a negative by definition, never a positive.
            self._pending[key] = _Pending(event, self.history(event.user_id))
            self._pending.move_to_end(key, last=False)
            return
        self._pending[key] = _Pending(event, self.history(event.user_id))

    def _on_positive(self, key: _Key, event: BehaviourEvent, out: list[Sample]) -> None:
        pend = self._pending.get(key)
        if pend is None:
            had_positive = self._closed.get(key)
            if had_positive is None:
                self.outcomes["orphan_click"] += 1
            elif had_positive:
                self.outcomes["duplicate_click"] += 1
            else:
                self.outcomes["late_click"] += 1
            return
        imp = pend.event
        if event.ts > imp.ts + self.window_ms:
            self.outcomes["click_outside_window"] += 1
            return
        del self._pending[key]
        self._remember_closed(key, True)
        out.append(_sample(imp, 1, pend.history))
        self._push_history(imp.user_id, imp.item_id)

    def _expire(self, out: list[Sample]) -> None:
        horizon = self.watermark - self.window_ms
        pending = self._pending
        # Pending impressions are (nearly) in event-time order: stop at the first open one.
        while pending:
            key, pend = next(iter(pending.items()))
            if pend.event.ts >= horizon:
                break
            del pending[key]
            self._remember_closed(key, False)
            out.append(_sample(pend.event, 0, pend.history))

    def _remember_closed(self, key: _Key, positive: bool) -> None:
        self._closed[key] = positive
        if len(self._closed) > self.closed_memory:
            self._closed.popitem(last=False)

    def _push_history(self, user_id: str, item_id: str) -> None:
        hist = self._history.get(user_id)
        if hist is None:
            hist = self._history[user_id] = deque(maxlen=self.history_len)
            if len(self._history) > self.max_users:
                self._history.popitem(last=False)
        else:
            self._history.move_to_end(user_id)
        if item_id in hist:
            hist.remove(item_id)
        hist.appendleft(item_id)

    def state_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable copy of all join state."""
        return {
            "watermark": self.watermark,
            "outcomes": dict(self.outcomes),
            "pending": [[list(p.event[:10]), p.event.context, list(p.history)]
                        for p in self._pending.values()],
            "closed": [[k[0], k[1], v] for k, v in self._closed.items()],
            "history": {u: list(h) for u, h in self._history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace all join state with one produced by :meth:`state_dict`."""
        self.watermark = int(state["watermark"])
        self.outcomes = Counter(state["outcomes"])
        self._pending = OrderedDict()
        for fields, context, history in state["pending"]:
            ev = BehaviourEvent._make([*fields, context])
            self._pending[(ev.request_id, ev.item_id)] = _Pending(ev, tuple(history))
        self._closed = OrderedDict(((r, i), bool(v)) for r, i, v in state["closed"])
        self._history = OrderedDict(
            (u, deque(h, maxlen=self.history_len)) for u, h in state["history"].items())


def _sample(imp: BehaviourEvent, label: int, history: tuple[str, ...]) -> Sample:
    return Sample(imp.ts, imp.user_id, imp.item_id, label, imp.arm, imp.request_id,
                  imp.position, imp.propensity, history)
