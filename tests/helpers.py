"""Event builders and small waiting helpers shared by the tests."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from consumers.events import BehaviourEvent, RawMessage, Sample
from consumers.joiner import Joiner
from consumers.parse import parse_event


def event(etype: str, *, eid: str, ts: int, user: str = "u1", item: str = "i1",
          req: str = "r1", arm: str = "fresh", **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "ts": ts, "type": etype, "user_id": user, "item_id": item,
            "request_id": req, "arm": arm, "position": 0, "propensity": 0.5, **extra}


def encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def traffic(n_requests: int, seed: int = 0, t0: int = 1_700_000_000_000,
            ctr: float = 0.3) -> Iterator[dict[str, Any]]:
    """A seeded stream: each request shows 2 items; some get clicked seconds later."""
    rng = random.Random(seed)
    for r in range(n_requests):
        user = f"u{rng.randrange(50)}"
        ts = t0 + r * 100
        for slot in range(2):
            item = f"i{rng.randrange(200)}"
            yield event("impression", eid=f"imp-{r}-{slot}", ts=ts, user=user, item=item,
                        req=f"r{r}", position=slot)
            if rng.random() < ctr:
                yield event("click", eid=f"clk-{r}-{slot}", ts=ts + 2000, user=user,
                            item=item, req=f"r{r}", position=slot)


def malformed() -> list[tuple[bytes, str]]:
    """One malformed message per rejection reason, with the reason expected."""
    good = event("impression", eid="bad-base", ts=1)
    missing = dict(good)
    del missing["user_id"]
    return [
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"{not json", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (encode(missing), "missing_field"),
        (encode({**good, "ts": "yesterday"}), "bad_type"),
        (encode({**good, "type": "hover"}), "bad_value"),
        (encode({**good, "propensity": 0}), "bad_value"),
        (encode({**good, "pad": "x" * 70_000}), "too_large"),
    ]


def expected_samples(events: list[dict[str, Any]], window_ms: int = 30 * 60 * 1000) -> list[Sample]:
    """Reference labels: the same events through a fresh joiner, deduped, flushed at the end."""
    joiner, seen, out = Joiner(window_ms=window_ms), set(), []
    for obj in events:
        ev = parse_event(encode(obj))
        assert isinstance(ev, BehaviourEvent), ev
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        joiner.add(ev, out)
        joiner.expire(out)
    joiner.flush(out)
    return out


def sample_key(s: Sample) -> tuple[Any, ...]:
    return (s.request_id, s.item_id, s.label)


def wait_for(cond: Callable[[], bool], timeout_s: float = 30.0, step_s: float = 0.05,
             what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def raw(value: bytes | None, topic: str = "freshrec.events", offset: int = 0) -> RawMessage:
    return RawMessage(topic, 0, offset, None, value)
