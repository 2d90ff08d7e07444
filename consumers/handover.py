"""Pending joins follow their partition to its next owner: a rebalance loses no label.

An impression waits in the joiner of the process that read it, but when its partition
moves to another process (a scale-up, a scale-down, a crash), the click that closes it is
read there. Kafka Streams solves this with a changelog of each partition's state that the
new owner replays. Here every checkpoint writes, per events partition, the pending
impressions read from it (with the histories of their users) to a shared store, tagged
with the offset they hold up to, before the offsets are committed. At a rebalance:

* a partition this process no longer owns: its pending impressions are forgotten here
  (not closed as negatives); the new owner adopts them;
* a partition newly assigned: unless this process's own state of it reaches the offset
  it resumes from (it owned it before and nobody moved it on), what it holds of it is
  dropped and the stored state adopted.

The stored state may be ahead of the resume offset (a crash between the store write and
the commit): the events in between are read again and, since labels depend only on the
events, give the same samples again, which the trainer drops by key. It is never behind
(the write precedes the commit, and while it cannot be written nothing is committed); a
state from before the resume offset is refused and counted as ``stale``.

Users' histories travel for users with a pending impression; other users of a moved
partition start a new history at the new owner (labels are unaffected).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from consumers.events import Message, Offsets
from consumers.joiner import Joiner

__all__ = ["HandoverStore", "JoinHandover"]

log = logging.getLogger(__name__)

_Tp = tuple[str, int]


class HandoverStore(Protocol):
    """Per-partition blobs with the offset each holds up to (see ``model_store.handover``)."""

    def save(self, states: dict[_Tp, tuple[int, bytes]]) -> None:
        """Replace each partition's state; raises StoreUnavailable if it cannot."""
        ...

    def load(self, part: _Tp) -> tuple[int, bytes] | None:
        """The partition's last saved (offset, blob), or None."""
        ...


class Pipeline(Protocol):
    """The parts of :class:`consumers.pipeline.IngestPipeline` a hand-over changes."""

    offsets: Offsets
    committed: Offsets
    partition_ts: dict[tuple[str, int], list[float]]
    joiner: Joiner


class JoinHandover:
    """Saves each events partition's pending joins; moves them at a rebalance."""

    def __init__(self, store: HandoverStore, events_topic: str) -> None:
        self.store, self.events_topic = store, events_topic
        self.awaiting: set[_Tp] = set()  # assigned, first record not read yet
        self._encode = msgspec.msgpack.Encoder()

    def save(self, joiner: Joiner, offsets: Offsets) -> bool:
        """Write the pending joins of every events partition in ``offsets`` (before commit).

        False if the store is unreachable: then nothing may be committed, or a partition's
        next owner would resume past impressions it cannot label. The worker goes on
        ingesting, and the next checkpoint tries again (as with any Redis outage).
        """
        mine = {tp: offset for tp, offset in offsets.items() if tp[0] == self.events_topic}
        states = {tp: (mine[tp], self._encode.encode([rows, histories]))
                  for tp, (rows, histories) in joiner.handovers(mine).items()
                  if tp is not None}
        if not states:
            return True
        try:
            self.store.save(states)
        except ConnectionError as exc:  # StoreUnavailable is one
            log.warning("join hand-over not saved, offsets left uncommitted: %s", exc)
            return False
        return True

    def reassigned(self, p: Pipeline, assigned: set[_Tp]) -> Counter[str]:
        """Apply a new assignment: forget the pending joins of partitions that moved away.

        The partitions assigned are settled by :meth:`resume` when their first records
        arrive (the first offset read is where reading resumed: no call to the broker).
        """
        done: Counter[str] = Counter()
        mine = {tp for tp in assigned if tp[0] == self.events_topic}
        held = {tp for tp in p.offsets if tp[0] == self.events_topic}
        for tp in held - mine:  # moved away: its next owner labels what is pending
            done["released"] += p.joiner.release(tp)
            _forget(p, tp)
        self.awaiting = mine
        if done:
            log.info("rebalance: pending impressions %s", dict(done))
        return done

    def resume(self, p: Pipeline, messages: Sequence[Message]) -> Counter[str]:
        """Adopt stored joins for partitions whose first records since the rebalance came.

        Call before ``messages`` are processed: each partition assigned at the last
        rebalance whose first record is among them is settled here.
        """
        firsts: dict[_Tp, int] = {}
        for msg in messages:
            tp = (msg.topic, msg.partition)
            if tp in self.awaiting and tp not in firsts:
                firsts[tp] = msg.offset
        done: Counter[str] = Counter()
        for tp, start in firsts.items():
            self.awaiting.discard(tp)
            if p.offsets.get(tp, -1) >= start:
                # Our own state of it reaches where reading resumed (we kept it, or a
                # restart from a checkpoint taken after the last commit, whose dedupe
                # window drops the events read again): nobody else moved it on.
                continue
            p.joiner.release(tp)
            _forget(p, tp)
            try:
                saved = self.store.load(tp)
            except ConnectionError as exc:
                log.warning("join hand-over of %s unreadable, its pending impressions "
                            "are lost to this owner: %s", tp, exc)
                done["unavailable"] += 1
                continue
            if saved is None:
                continue
            offset, blob = saved
            if offset < start:
                log.warning("hand-over of %s is at offset %d, before %d where reading "
                            "resumed: not used", tp, offset, start)
                done["stale"] += 1
                continue
            rows, histories = msgspec.msgpack.decode(blob, type=list[Any])
            done["adopted"] += p.joiner.adopt(rows, histories)
        if done:
            log.info("rebalance: pending impressions %s", dict(done))
        return done


def _forget(p: Pipeline, tp: _Tp) -> None:
    """Drop what the pipeline tracks of a partition it no longer reads (or reads anew)."""
    p.offsets.pop(tp, None)
    p.committed.pop(tp, None)
    p.partition_ts.pop(tp, None)  # else its old time would hold the join watermark back
