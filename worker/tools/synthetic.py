"""Synthetic behaviour streams and an in-memory event source, shared by benches and tests.

They live in the package (not under ``tests/``) so a benchmark never imports the test
suite. Everything here is seeded and deterministic.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec

from consumers.events import Message, Offsets, RawMessage

__all__ = ["ListSource", "encode", "event", "traffic"]


def event(etype: str, *, eid: str, ts: int, user: str = "u1", item: str = "i1",
          req: str = "r1", arm: str = "fresh", **extra: Any) -> dict[str, Any]:
    """One behaviour event in the contract format (docs/contracts/events.md).

    >>> event("click", eid="e1", ts=5)["type"]
    'click'
    """
    return {"event_id": eid, "ts": ts, "type": etype, "user_id": user, "item_id": item,
            "request_id": req, "arm": arm, "position": 0, "propensity": 0.5, **extra}


def encode(obj: Any) -> bytes:
    """JSON bytes, as an app would produce them."""
    return msgspec.json.encode(obj)


def traffic(n_requests: int, seed: int = 0, t0: int | None = None,
            ctr: float = 0.3, users: int = 50, items: int = 200,
            arms: tuple[str, ...] = ("fresh",)) -> Iterator[dict[str, Any]]:
    """A seeded stream: each request shows 2 items; some get clicked 2 s later.

    Event time starts at ``t0`` (epoch ms; default: an hour ago, so a broker's log time
    accepts it), 100 ms per request.

    >>> [e["type"] for e in traffic(1, seed=3)]
    ['impression', 'impression']
    """
    rng = random.Random(seed)
    if t0 is None:
        t0 = (time.time_ns() // 1_000_000 - 3_600_000) // 1000 * 1000
    for r in range(n_requests):
        user = f"u{rng.randrange(users)}"
        arm = arms[r % len(arms)]
        ts = t0 + r * 100
        for slot in range(2):
            item = f"i{rng.randrange(items)}"
            yield event("impression", eid=f"imp-{r}-{slot}", ts=ts, user=user, item=item,
                        req=f"r{r}", position=slot, arm=arm)
            if rng.random() < ctr:
                yield event("click", eid=f"clk-{r}-{slot}", ts=ts + 2000, user=user,
                            item=item, req=f"r{r}", position=slot, arm=arm)


class ListSource:
    """An :class:`~consumers.base.EventSource` over a fixed list of messages, in batches."""

    def __init__(self, messages: list[RawMessage]) -> None:
        self.messages = list(messages)
        self.pos = 0
        self.committed: Offsets = {}
        self.revoke_hook: Callable[[], Offsets] | None = None

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Message]:
        """The next ``max_records`` messages ([] once exhausted)."""
        batch: list[Message] = list(self.messages[self.pos:self.pos + max_records])
        self.pos += len(batch)
        return batch

    def commit(self, offsets: Offsets) -> None:
        """Remember the committed offsets."""
        self.committed.update(offsets)

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages not yet handed out, all counted on partition 0 of their topic."""
        out: dict[tuple[str, int], int] = {}
        for m in self.messages[self.pos:]:
            out[(m.topic, m.partition)] = out.get((m.topic, m.partition), 0) + 1
        return out

    def take_assignment(self) -> set[tuple[str, int]] | None:
        """None: a list never rebalances."""
        return None

    def take_recreated(self) -> set[str]:
        """None: a list is one log."""
        return set()

    def resume(self, offsets: Offsets, incarnations: Mapping[str, str]) -> None:
        """Nothing to skip: a list is read once, from where it stands."""

    def incarnations(self) -> dict[str, str]:
        """None known: a list has no log ids."""
        return {}

    def set_revoke_hook(self, hook: Callable[[], Offsets]) -> None:
        """Keep the hook (a list never rebalances)."""
        self.revoke_hook = hook

    def close(self) -> None:
        """Nothing to release."""
