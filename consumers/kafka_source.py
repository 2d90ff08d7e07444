"""kafka-python behind the project's seams: the consumer-group EventSource.

Clients, the plain producer and topic admin are in :mod:`consumers.kafka_clients`
(re-exported here); the dead-letter producer is in :mod:`consumers.kafka_dlq`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.base import SourceUnavailable
from consumers.events import Message, Offsets
from consumers.kafka_clients import KafkaEventProducer, connect_client, ensure_topics

__all__ = ["KafkaEventProducer", "KafkaEventSource", "Shard", "connect_client", "ensure_topics"]

log = logging.getLogger(__name__)

#: Consumer defaults tuned for fast group joins: the broker waits about half a session
#: timeout for members on a join, so 6 s sessions join in ~3 s instead of ~25 s.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 120_000,
    "fetch_max_wait_ms": 100,
    # Topics are created by ensure_topics with their partition counts; a consumer that
    # auto-created one (after a broker lost its topics) would give it the broker's default.
    "allow_auto_create_topics": False,
}


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Checkpoints and commits before partitions move, so the next owner starts exactly here.

    kafka-python runs listeners on its IO loop, where the blocking ``commit()`` is refused;
    the async variant awaits the coordinator's commit so heartbeats keep flowing meanwhile.
    """

    def __init__(self, source: KafkaEventSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        hook = self.source.revoke_hook
        if not revoked or hook is None:
            return
        log.info("partitions revoked: %s; checkpointing first", sorted(map(tuple, revoked)))
        offsets = self.source.to_commit(hook())
        if offsets:
            coordinator = self.source._consumer._coordinator  # noqa: SLF001 - no public async commit
            await coordinator._commit_offsets_sync_async(offsets)  # noqa: SLF001

    async def on_partitions_lost(self, lost: Any) -> None:
        # KIP-429: the group no longer knows this member (a session expired, or the broker
        # restarted and forgot the group). The partitions may be someone else's already, so
        # nothing is committed; what was read stays in memory and is redelivered if needed.
        log.warning("partitions lost: %s; rejoining without a commit", sorted(map(tuple, lost)))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned: %s", sorted(map(tuple, assigned)))
        self.source._on_assigned(set(assigned))  # noqa: SLF001 - the listener is its part


@dataclass(frozen=True)
class Shard:
    """A fixed share of partitions (one trainer rank's): no group membership, no rebalance.

    Partition ``p`` of a topic is read by rank ``p % world``; topics in ``whole`` (the
    catalog, which every rank needs) are read whole by every rank.
    """

    rank: int
    world: int
    whole: frozenset[str] = frozenset()


class KafkaEventSource:
    """A kafka-python consumer-group member implementing :class:`consumers.base.EventSource`.

    Args:
        topics: topics to subscribe to.
        group_id: consumer group; members of one group split the partitions.
        client_options: passed to ``KafkaConsumer`` (bootstrap_servers, security settings).
        shard: read this fixed share of the partitions instead of joining the group
            (offsets are still committed under ``group_id``).
    """

    def __init__(self, topics: Iterable[str], group_id: str,
                 client_options: Mapping[str, Any], shard: Shard | None = None) -> None:
        options = {**CONSUMER_DEFAULTS, **client_options, "group_id": group_id}
        self.revoke_hook: Callable[[], Offsets] | None = None
        # Partitions read from since the last assignment: only their offsets are committed.
        # An offset read before a rebalance is stale once the group has handed the
        # partition out again (and after a broker lost its log, it points past the new one).
        self._read_since_assign: set[TopicPartition] = set()
        self._topic_ids: dict[str, str] = {}  # topic -> id of the incarnation being read
        self._reset: set[str] = set()  # recreated topics to read from the start
        self._recreated: set[str] = set()  # recreated since take_recreated
        # Next offset after the last record handed out, per partition of the current
        # incarnations: a record below it was handed out before and is not handed out again.
        self._next: dict[TopicPartition, int] = {}
        self._assigned: set[tuple[str, int]] | None = None  # since take_assignment
        self._consumer = connect_client(KafkaConsumer, options)
        if shard is None:
            self._consumer.subscribe(topics=list(topics), listener=_Listener(self))
        else:
            self._assign_shard(list(topics), shard)

    def _assign_shard(self, topics: list[str], shard: Shard) -> None:
        parts = {TopicPartition(topic, p) for topic in topics
                 for p in self._consumer.partitions_for_topic(topic)
                 if topic in shard.whole or p % shard.world == shard.rank}
        log.info("rank %d of %d reads %s", shard.rank, shard.world,
                 sorted((tp.topic, tp.partition) for tp in parts))
        self._consumer.assign(list(parts))
        self._on_assigned(parts)

    def set_revoke_hook(self, hook: Callable[[], Offsets]) -> None:
        """Install the callback run before partitions are revoked; it returns what to commit."""
        self.revoke_hook = hook

    def resume(self, offsets: Offsets, incarnations: Mapping[str, str]) -> None:
        """Records below ``offsets`` are in a restored state: they are not handed out again.

        A checkpoint can be written and its commit lost (a kill in between, or an outage
        that holds the commit back): the group then hands out the records between the two
        again, and a rejected one would be dead-lettered twice. Only topics whose log id
        was known when the offsets were saved are skipped this way: a log lost since has a
        new id, and is read from its start by the incarnation check.
        """
        for topic, topic_id in incarnations.items():
            self._topic_ids.setdefault(topic, topic_id)
        for (topic, partition), offset in offsets.items():
            if topic in incarnations:
                self._next[TopicPartition(topic, partition)] = offset

    def incarnations(self) -> dict[str, str]:
        """The id of the log read so far, per topic (saved with the offsets)."""
        return dict(self._topic_ids)

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Message]:
        """Poll once; flatten the per-partition records into one list (no copies)."""
        self._check_incarnations(self._consumer.assignment())
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000),
                                         max_records=max_records)
        except KafkaError as exc:
            raise SourceUnavailable(f"poll failed: {exc}") from exc
        recreated = self._check_incarnations(self._consumer.assignment())
        out: list[Message] = []
        for tp, polled_records in polled.items():
            if tp.topic in recreated:
                continue  # read at a position in the old log: read again from the start
            records, seen = polled_records, self._next.get(tp, 0)
            if records[0].offset < seen:
                # Redelivered: the group lost this member and handed the partition back at
                # its last commit. What was read since then is in our state already.
                records = [r for r in records if r.offset >= seen]
                if not records:
                    continue
            self._reset.discard(tp.topic)
            self._read_since_assign.add(tp)
            self._next[tp] = records[-1].offset + 1
            out.extend(records)  # ConsumerRecord already satisfies Message
        return out

    def take_recreated(self) -> set[str]:
        """Topics found recreated since last asked, once (their held offsets are stale)."""
        recreated, self._recreated = self._recreated, set()
        return recreated

    def take_assignment(self) -> set[tuple[str, int]] | None:
        """The partitions assigned at the last rebalance, once (None: none since asked)."""
        assigned, self._assigned = self._assigned, None
        return assigned

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        # kafka-python keeps the position of a partition assigned again, and a member that
        # lost the group starts from committed offsets: after a log loss, both may come from
        # the old log, so recreated topics are sought to their start on every assignment.
        self._read_since_assign.clear()
        self._assigned = {(tp.topic, tp.partition) for tp in assigned}
        for tp in [tp for tp in self._next if tp not in assigned]:
            # Gone to another member: if it comes back, what was read before is not ours
            # to skip any more (its pending joins were handed over with it).
            del self._next[tp]
        self._check_incarnations(assigned, assigning=True)

    def _check_incarnations(self, assigned: set[TopicPartition], assigning: bool = False
                            ) -> set[str]:
        """Topics recreated since they were last read (a new id); they are read from the start.

        A broker that lost its log (a restarted memory broker, lost disks, a topic deleted
        and created again) gives the topic a new id. Positions from the old log, and any
        offset committed from them, would skip the new log's head or wait past its end
        forever. So such a topic is read again from its beginning (the dedupe window drops
        events seen already) and no old offset of it is committed.
        """
        cluster = self._consumer._cluster  # noqa: SLF001 - topic ids have no public accessor
        recreated: set[str] = set()
        for topic in {tp.topic for tp in assigned}:
            found = cluster.topic_id(topic)
            if found is None:
                continue
            now, before = str(found), self._topic_ids.get(topic)
            if before is not None and now != before:
                log.warning("topic %s was recreated (id %s, was %s): reading it from the start",
                            topic, now, before)
                self._reset.add(topic)
                recreated.add(topic)
                self._recreated.add(topic)
                for tp in [tp for tp in self._next if tp.topic == topic]:
                    del self._next[tp]
            self._topic_ids[topic] = now
            if topic in recreated or (assigning and topic in self._reset):
                tps = [tp for tp in assigned if tp.topic == topic]
                self._consumer.seek_to_beginning(*tps)
                self._read_since_assign.difference_update(tps)
        return recreated

    def commit(self, offsets: Offsets) -> None:
        """Commit synchronously; offsets of partitions no longer assigned are skipped."""
        to_commit = self.to_commit(offsets)
        if to_commit:
            try:
                self._consumer.commit(offsets=to_commit)
            except KafkaError as exc:  # e.g. not in an active group after a broker restart
                raise SourceUnavailable(f"commit failed: {exc}") from exc

    def to_commit(self, offsets: Offsets) -> dict[TopicPartition, OffsetAndMetadata]:
        """kafka-python's commit argument for the assigned partitions among ``offsets``.

        Only partitions read from since the current assignment: an older offset would
        overwrite the progress of the member that held the partition meanwhile.
        """
        assigned = self._consumer.assignment()
        out = {}
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned and tp in self._read_since_assign:
                out[tp] = OffsetAndMetadata(offset, "", -1)
        return out

    def lag(self) -> dict[tuple[str, int], int]:
        """Log end minus position per assigned partition, with the end asked of the broker.

        A real ListOffsets request (not the high-water mark of the last fetch, which is
        stale while the worker trains or checkpoints). {} if the broker does not answer.
        """
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        try:
            ends = self._consumer.end_offsets(assigned)
        except KafkaError as exc:
            log.debug("end offsets unavailable: %s", exc)
            return {}
        out = {}
        for tp in assigned:
            try:
                pos = self._consumer.position(tp, timeout_ms=0)
            except Exception:  # noqa: BLE001, S112 - position unknown until the first fetch
                continue
            # The broker's answer, or the last fetch's high-water mark if that is higher
            # (a broker may answer with a batch's base offset; both are lower bounds).
            end = max(ends.get(tp) or 0, self._consumer.highwater(tp) or 0)
            if pos is not None:
                out[(tp.topic, tp.partition)] = max(0, end - pos)
        return out

    def assignment(self) -> set[tuple[str, int]]:
        """The partitions this member holds now."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def close(self) -> None:
        """Leave the group without committing.

        Leaving runs the revoke hook (checkpoint, then commit). If that fails (the group
        was lost meanwhile, the broker is away), the process still ends cleanly: what was
        not committed is read again by the next owner and dropped by its dedupe window.
        """
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            log.warning("left the group without a final commit: %s", exc)
