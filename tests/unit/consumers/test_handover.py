"""Pending joins move with their partition: what two owners label equals one owner."""

from __future__ import annotations

from consumers.events import RawMessage
from consumers.handover import JoinHandover
from consumers.joiner import Joiner
from tests.unit.consumers.test_joiner import ev

TOPIC = "events"


class MemoryHandover:
    """A dict as the shared store (the Redis one runs in the integration tests)."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, int], tuple[int, bytes]] = {}

    def save(self, states: dict[tuple[str, int], tuple[int, bytes]]) -> None:
        self.states.update(states)

    def load(self, part: tuple[str, int]) -> tuple[int, bytes] | None:
        return self.states.get(part)


class Owner:
    """The parts of a pipeline a hand-over touches."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.partition_ts: dict[tuple[str, int], list[float]] = {}
        self.joiner = Joiner(window_ms=1000)
        self.out: list = []

    def read(self, part: int, offset: int, event) -> None:
        tp = (TOPIC, part)
        self.offsets[tp] = offset + 1
        self.joiner.add(event, self.out, tp)


def stream():
    """(partition, event): user u0's events on partition 0, u1's on 1; clicks 500 ms on."""
    out = []
    for n in range(40):
        user, part = (f"u{n % 2}", n % 2)
        out.append((part, ev("impression", f"i{n}", n * 100, req=f"r{n}", item=f"x{n % 7}",
                             user=user)))
        if n % 3 == 0:
            out.append((part, ev("click", f"c{n}", n * 100 + 500, req=f"r{n}",
                                 item=f"x{n % 7}", user=user)))
    return sorted(out, key=lambda pe: pe[1].ts)


def at(part: int, offset: int) -> list[RawMessage]:
    """The first record read from a partition after the rebalance."""
    return [RawMessage(TOPIC, part, offset, None, b"{}")]


def labels(samples) -> list:
    return sorted((s.request_id, s.item_id, s.label, s.history) for s in samples)


def test_a_moved_partition_takes_its_pending_impressions_and_histories_along():
    events = stream()
    reference = Owner()
    for k, (part, e) in enumerate(events):
        reference.read(part, k, e)
    reference.joiner.flush(reference.out)

    store = MemoryHandover()
    a, b = Owner(), Owner()
    ha, hb = JoinHandover(store, TOPIC), JoinHandover(store, TOPIC)
    offsets = {0: 0, 1: 0}
    cut = len(events) // 2
    for part, e in events[:cut]:  # a owns both partitions
        a.read(part, offsets[part], e)
        offsets[part] += 1
    ha.save(a.joiner, a.offsets)  # the checkpoint before the commit at the rebalance
    assert ha.reassigned(a, {(TOPIC, 0)})["released"] > 0
    assert (TOPIC, 1) not in a.offsets and (TOPIC, 1) not in a.partition_ts
    assert not hb.reassigned(b, {(TOPIC, 1)}) and not ha.resume(a, at(0, offsets[0]))
    assert hb.resume(b, at(1, offsets[1]))["adopted"] > 0
    for part, e in events[cut:]:
        (a if part == 0 else b).read(part, offsets[part], e)
        offsets[part] += 1
    for owner in (a, b):
        owner.joiner.flush(owner.out)
    # Every label once, with the history the reference gave it: none closed early as a
    # negative by the old owner, none lost at the new one.
    assert labels(a.out + b.out) == labels(reference.out)


def test_a_state_older_than_where_reading_resumes_is_refused():
    store = MemoryHandover()
    a, b = Owner(), Owner()
    a.read(1, 0, ev("impression", "i0", 0, req="r0", user="u1"))
    JoinHandover(store, TOPIC).save(a.joiner, a.offsets)  # at offset 1
    h = JoinHandover(store, TOPIC)
    h.reassigned(b, {(TOPIC, 1)})
    assert h.resume(b, at(1, 5)) == {"stale": 1} and b.joiner.pending == 0


def test_an_owner_whose_state_is_where_reading_resumes_keeps_it():
    store = MemoryHandover()
    a = Owner()
    a.read(0, 0, ev("impression", "i0", 0, req="r0", user="u0"))
    h = JoinHandover(store, TOPIC)
    h.save(a.joiner, a.offsets)
    assert not h.reassigned(a, {(TOPIC, 0)}) and not h.resume(a, at(0, 1))  # nothing moved
    assert a.joiner.pending == 1


class DownStore(MemoryHandover):
    def save(self, states):
        raise ConnectionError("Redis unavailable")


def test_while_the_hand_over_cannot_be_written_no_offset_is_committed():
    from consumers.dlq import MemoryDeadLetters
    from consumers.events import RawMessage
    from consumers.pipeline import IngestPipeline
    from tests.fakes import ListSource
    from tests.helpers import encode, event

    msgs = [RawMessage("freshrec.events", 0, 0, None,
                       encode(event("impression", eid="i0", ts=1, req="r0")))]
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters())
    pipeline.handover = JoinHandover(DownStore(), "freshrec.events")
    pipeline.step()
    assert pipeline.checkpoint() == {} and source.committed == {}  # the outage
    pipeline.handover = JoinHandover(MemoryHandover(), "freshrec.events")
    assert pipeline.checkpoint() == {("freshrec.events", 0): 1}  # Redis back
