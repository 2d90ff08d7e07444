"""Event builders and small waiting helpers shared by the tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from consumers.events import BehaviourEvent, RawMessage, Sample
from consumers.joiner import Joiner
from consumers.parse import parse_event
from worker.tools.synthetic import encode, event, traffic

__all__ = ["encode", "event", "expected_samples", "malformed", "raw", "sample_key", "run_members",
           "traffic", "wait_for"]


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


def run_members(steps: Sequence[Callable[[], object]], until: Callable[[], bool],
                timeout_s: float, what: str) -> None:
    """Call each step in a loop on its own thread, as separate processes would, until
    ``until()`` holds.

    Group members must each keep polling for a rebalance to finish: the coordinator answers
    one member's JoinGroup only once every member has rejoined, so one thread stepping the
    members in turn can stall a join for as long as the member it waits in blocks.
    """
    stop, failed = threading.Event(), []

    def loop(step: Callable[[], object]) -> None:
        try:
            while not stop.is_set():
                step()
        except BaseException as exc:  # reported on the test's thread
            failed.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(s,), daemon=True) for s in steps]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: bool(failed) or until(), timeout_s=timeout_s, what=what)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    if failed:
        raise failed[0]


def raw(value: bytes | None, topic: str = "freshrec.events", offset: int = 0) -> RawMessage:
    return RawMessage(topic, 0, offset, None, value)
