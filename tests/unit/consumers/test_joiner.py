from consumers.events import BehaviourEvent
from consumers.joiner import Joiner
from consumers.parse import parse_event
from tests.helpers import encode, event

MIN = 60_000


def ev(etype, eid, ts, req="r1", item="i1", user="u1") -> BehaviourEvent:
    got = parse_event(encode(event(etype, eid=eid, ts=ts, req=req, item=item, user=user)))
    assert isinstance(got, BehaviourEvent)
    return got


def run(events, window_ms=30 * MIN, flush=True):
    j, out = Joiner(window_ms=window_ms), []
    for e in events:
        j.add(e, out)
        j.expire(out)
    if flush:
        j.flush(out)
    return j, [(s.request_id, s.item_id, s.label) for s in out]


def test_click_inside_window_is_positive_once():
    j, got = run([ev("impression", "a", 0), ev("click", "b", 5 * MIN)])
    assert got == [("r1", "i1", 1)]
    assert sum(j.outcomes.values()) == 0


def test_impression_without_click_closes_negative_when_window_passes():
    j, got = run([ev("impression", "a", 0), ev("impression", "x", 31 * MIN, req="r2")],
                 flush=False)
    assert got == [("r1", "i1", 0)]
    assert j.pending == 1


def test_click_past_the_window_is_not_a_positive():
    j, got = run([ev("impression", "a", 0), ev("click", "b", 31 * MIN)], flush=False)
    assert got == [("r1", "i1", 0)]  # the click advanced the watermark and closed it
    assert j.outcomes["click_outside_window"] == 1


def test_click_past_window_while_still_pending_counts_outside_window():
    j = Joiner(window_ms=30 * MIN)
    out = []
    j.add(ev("impression", "a", 10 * MIN), out)
    j.watermark = 50 * MIN  # pretend another partition pushed event time on
    j.add(ev("click", "b", 45 * MIN), out)  # expire() not yet run: r1 still pending
    assert out == [] and j.outcomes["click_outside_window"] == 1


def test_late_click_after_negative_is_counted_not_relabelled():
    j, got = run([ev("impression", "a", 0), ev("impression", "x", 40 * MIN, req="r2"),
                  ev("click", "b", 10 * MIN)], flush=False)
    assert got == [("r1", "i1", 0)]
    assert j.outcomes["late_click"] == 1


def test_orphan_click_is_counted_not_invented():
    j, got = run([ev("click", "b", 0, req="nope")])
    assert got == [] and j.outcomes["orphan_click"] == 1


def test_duplicate_click_gives_one_positive():
    j, got = run([ev("impression", "a", 0), ev("click", "b", MIN), ev("click", "c", 2 * MIN)])
    assert got == [("r1", "i1", 1)]
    assert j.outcomes["duplicate_click"] == 1


def test_purchase_counts_as_positive_and_items_of_one_request_join_separately():
    _, got = run([ev("impression", "a", 0, item="i1"), ev("impression", "b", 0, item="i2"),
                  ev("purchase", "c", MIN, item="i2")])
    assert sorted(got) == [("r1", "i1", 0), ("r1", "i2", 1)]


def test_samples_carry_history_before_the_impression():
    j, out = Joiner(), []
    for e in [ev("impression", "1", 0, req="r1", item="a"), ev("click", "2", 1, req="r1", item="a"),
              ev("impression", "3", 2, req="r2", item="b"), ev("click", "4", 3, req="r2", item="b"),
              ev("impression", "5", 4, req="r3", item="c")]:
        j.add(e, out)
        j.expire(out)
    j.flush(out)
    hist = {s.item_id: s.history for s in out}
    assert hist == {"a": (), "b": ("a",), "c": ("b", "a")}


def test_state_round_trip_continues_identically():
    events = [ev("impression", "a", 0), ev("impression", "b", 0, req="r2"),
              ev("click", "c", MIN)]
    j1, out1 = Joiner(), []
    for e in events[:2]:
        j1.add(e, out1)
    j2 = Joiner()
    j2.load_state_dict(j1.state_dict())
    for j, out in ((j1, out1), (j2, list(out1))):
        j.add(events[2], out)
        j.flush(out)
    assert out1 == out


def test_old_impression_read_after_a_newer_one_still_closes_on_time():
    # One partition's backlog drained before another's: arrival order is not event order.
    # The old impression must close as soon as the watermark passes its window, not wait
    # behind the newer one.
    j, out = Joiner(window_ms=MIN), []
    for e in (ev("impression", "new", 10 * MIN, req="r-new"),
              ev("impression", "old", 0, req="r-old")):
        j.add(e, out)
    j.expire(out, watermark=5 * MIN)
    assert [(s.request_id, s.label) for s in out] == [("r-old", 0)]
    assert j.pending == 1


def _msgspec_round_trip(state):
    """What a checkpoint does to a state: JSON out and back (tuples become lists)."""
    import msgspec

    return msgspec.json.decode(msgspec.json.encode(state))


def test_delta_chain_of_join_state_rebuilds_closed_keys_histories_and_pending():
    """Closed keys and user histories checkpoint as deltas (new since the last marks); a
    chain applied base first equals the live joiner, through both maps' trims."""
    import random

    rng = random.Random(3)
    live, out = Joiner(window_ms=50, max_users=40, closed_memory=400), []
    chain, marks = [], None
    for n in range(3000):
        user, req = f"u{rng.randrange(70)}", f"r{n // 3}"
        item = f"i{rng.randrange(30)}"
        live.add(ev("impression", f"e{n}", n, req=req, item=item, user=user), out)
        if rng.random() < 0.4:
            live.add(ev("click", f"c{n}", n + rng.randrange(80), req=req, item=item,
                        user=user), out)
        live.expire(out)
        if n % 97 == 0:
            full = marks is None or len(chain) % 7 == 0
            chain.append(_msgspec_round_trip(live.state_dict(None if full else marks)))
            marks = live.marks()
    chain.append(_msgspec_round_trip(live.state_dict(marks)))  # the state now, as a delta
    assert any("closed_delta" in s for s in chain) and any("history_delta" in s for s in chain)
    assert sum(live.evicted.values()) > 0  # both caps were hit along the way
    start = max(k for k, s in enumerate(chain) if "closed" in s)
    restored = Joiner(window_ms=50, max_users=40, closed_memory=400)
    for k in range(start, len(chain)):
        restored.load_state_dict(chain[k], final=k == len(chain) - 1)
    live_closed, live_pending = live.labels()
    got_closed, got_pending = restored.labels()
    assert list(got_closed.items()) == list(live_closed.items())  # same order too
    assert got_pending == live_pending
    assert list(restored._history.items()) == list(live._history.items())
    assert restored.watermark == live.watermark and restored.outcomes == live.outcomes
    # A delta is the new work: far fewer entries than the maps hold.
    last = chain[-1]
    assert len(last["closed_delta"]) < last["closed_len"]


def test_join_state_from_before_deltas_still_loads():
    j, _ = run([ev("impression", "a", 0), ev("click", "b", 1)], flush=False)
    old = {"watermark": 1, "outcomes": {}, "pending": [],
           "closed": [["r1", "i1", True]], "history": {"u1": ["i1"]}}
    j2 = Joiner()
    j2.load_state_dict(old)
    assert j2.labels() == j.labels() and j2.history("u1") == ("i1",)
