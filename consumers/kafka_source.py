"""The only kafka-python import: a consumer-group EventSource, a DLQ producer, topic admin."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata

from consumers.base import SourceUnavailable
from consumers.dlq import Source, dlq_record, source_of
from consumers.events import Message, Offsets, Rejection

__all__ = ["KafkaDeadLetterSink", "KafkaEventProducer", "KafkaEventSource", "ensure_topics"]

log = logging.getLogger(__name__)
_C = TypeVar("_C")
_Letter = tuple[Message, Rejection, bool]  # the source record, why, headers only?
#: Refusals about one record (its size or content): that record goes headers-only.
_RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError,
                  CorruptRecordError)

#: Consumer defaults tuned for fast group joins: the broker waits about half a session
#: timeout for members on a join, so 6 s sessions join in ~3 s instead of ~25 s.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 120_000,
    "fetch_max_wait_ms": 100,
}


def _connect(client: Callable[..., _C], options: Mapping[str, Any]) -> _C:
    """Build a kafka-python client; an unreachable broker is :class:`SourceUnavailable`."""
    try:
        return client(**options)
    except KafkaError as exc:  # kafka-python gives up bootstrapping after ~30 s
        servers = options.get("bootstrap_servers")
        where = ",".join(servers) if isinstance(servers, list) else str(servers)
        raise SourceUnavailable(f"cannot reach Kafka at {where} ({exc})") from exc


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

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned: %s", sorted(map(tuple, assigned)))


class KafkaEventSource:
    """A kafka-python consumer-group member implementing :class:`consumers.base.EventSource`.

    Args:
        topics: topics to subscribe to.
        group_id: consumer group; members of one group split the partitions.
        client_options: passed to ``KafkaConsumer`` (bootstrap_servers, security settings).
    """

    def __init__(self, topics: Iterable[str], group_id: str,
                 client_options: Mapping[str, Any]) -> None:
        options = {**CONSUMER_DEFAULTS, **client_options, "group_id": group_id}
        self.revoke_hook: Callable[[], Offsets] | None = None
        self._consumer = _connect(KafkaConsumer, options)
        self._consumer.subscribe(topics=list(topics), listener=_Listener(self))

    def set_revoke_hook(self, hook: Callable[[], Offsets]) -> None:
        """Install the callback run before partitions are revoked; it returns what to commit."""
        self.revoke_hook = hook

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Message]:
        """Poll once; flatten the per-partition records into one list (no copies)."""
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000),
                                         max_records=max_records)
        except KafkaError as exc:
            raise SourceUnavailable(f"poll failed: {exc}") from exc
        out: list[Message] = []
        for records in polled.values():
            out.extend(records)  # ConsumerRecord already satisfies Message
        return out

    def commit(self, offsets: Offsets) -> None:
        """Commit synchronously; offsets of partitions no longer assigned are skipped."""
        to_commit = self.to_commit(offsets)
        if to_commit:
            try:
                self._consumer.commit(offsets=to_commit)
            except KafkaError as exc:  # e.g. not in an active group after a broker restart
                raise SourceUnavailable(f"commit failed: {exc}") from exc

    def to_commit(self, offsets: Offsets) -> dict[TopicPartition, OffsetAndMetadata]:
        """kafka-python's commit argument for the assigned partitions among ``offsets``."""
        assigned = self._consumer.assignment()
        out = {}
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
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
        """Leave the group without committing."""
        self._consumer.close(autocommit=False)


class KafkaDeadLetterSink:
    """Produces rejected messages to the DLQ topic, reason in headers, once per source record.

    Values up to ``max_value_bytes`` go byte for byte; longer ones are truncated and marked
    (see :func:`consumers.dlq.dlq_record`). A record the broker still refuses is replaced by
    a headers-only record, so one hostile message never fails the batch around it.
    """

    def __init__(self, topic: str, client_options: Mapping[str, Any],
                 max_value_bytes: int = 512 * 1024) -> None:
        self.topic = topic
        self.max_value_bytes = max_value_bytes
        self._options = dict(client_options)
        self._producer_options = {
            "acks": "all", "linger_ms": 5,
            "max_request_size": max(1 << 20, max_value_bytes + 65536), **client_options}
        self._producer: KafkaProducer | None = _connect(KafkaProducer, self._producer_options)
        self._futures: list[tuple[Any, _Letter]] = []
        self._unsent: list[_Letter] = []  # not handed to the producer yet (it was down)
        self._position: dict[int, int] | None = None
        self._already_sent: set[Source] = set()
        self.skipped_duplicates = 0

    def send(self, message: Message, rejection: Rejection) -> None:
        """Queue the message (skipped if a previous run already dead-lettered it).

        Never raises: called in the middle of a batch, where an exception would lose the
        rest of the batch. A producer that cannot take the record now leaves it queued for
        :meth:`flush`, which raises before the offsets are committed.
        """
        src = (message.topic, message.partition, message.offset)
        if src in self._already_sent:
            self._already_sent.discard(src)
            self.skipped_duplicates += 1
            return
        self._submit((message, rejection, False))

    def _submit(self, letter: _Letter) -> None:
        message, rejection, headers_only = letter
        key, value, headers = dlq_record(message, rejection,
                                         0 if headers_only else self.max_value_bytes)
        try:
            if self._producer is None:  # dropped after a fatal error: a new session
                self._producer = _connect(KafkaProducer, self._producer_options)
            fut = self._producer.send(self.topic, key=None if headers_only else key,
                                      value=b"" if headers_only else value, headers=headers)
        except (KafkaError, SourceUnavailable) as exc:
            log.warning("dead letter queued until the broker is back: %s", exc)
            self._unsent.append(letter)
            return
        self._futures.append((fut, letter))

    def flush(self) -> None:
        """Wait until every queued dead letter is acknowledged; raise if one cannot be.

        A record the broker refuses for its own sake (size, content) is replaced by a
        headers-only record. Anything else (an outage, or a broker that forgot this
        producer's id after a restart) keeps the letters queued, starts a new producer
        session if the old one is unusable, and raises :class:`SourceUnavailable`.
        """
        unsent, self._unsent = self._unsent, []
        for letter in unsent:
            self._submit(letter)
        broken = False
        for _ in range(2):  # the second round acknowledges headers-only replacements
            if not self._futures:
                break
            try:
                if self._producer is not None:
                    self._producer.flush(timeout=60)
            except KafkaError as exc:
                log.warning("DLQ flush failed: %s", exc)
                broken = True
            futures, self._futures = self._futures, []
            for fut, letter in futures:
                try:
                    meta = fut.get(timeout=0 if broken else 30)
                except _RECORD_ERRORS as exc:
                    log.warning("dead letter refused (%s); sending its headers only", exc)
                    self._submit((letter[0], letter[1], True))
                    continue
                except KafkaError as exc:
                    broken = broken or not getattr(exc, "retriable", False)
                    self._unsent.append(letter)
                    continue
                self._advance(meta.partition, meta.offset + 1)
        self._unsent.extend(letter for _, letter in self._futures)
        self._futures = []
        if broken and self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=0)
            self._producer = None
        if self._unsent:
            raise SourceUnavailable(f"{len(self._unsent)} dead letters not acknowledged")

    def _advance(self, partition: int, next_offset: int) -> None:
        pos = self.position()
        pos[partition] = max(pos.get(partition, 0), next_offset)

    def position(self) -> dict[int, int]:
        """Next DLQ offset per partition (read from the broker once, then from acks)."""
        if self._position is None:
            reader = self._reader()
            try:
                tps = self._partitions(reader)
                self._position = {tp.partition: off for tp, off
                                  in reader.end_offsets(tps).items()} if tps else {}
            finally:
                reader.close()
        return self._position

    def resume_after(self, position: dict[int, int]) -> int:
        """Read the dead letters written after ``position`` and remember their sources."""
        reader = self._reader()
        try:
            tps = self._partitions(reader)
            if not tps:
                return 0
            reader.assign(tps)
            ends, begins = reader.end_offsets(tps), reader.beginning_offsets(tps)
            for tp in tps:
                start = position.get(tp.partition, 0)
                # Past the end: the broker lost the DLQ's log (a restarted memory broker,
                # a recreated topic), so every dead letter it holds now is newer than ours.
                reader.seek(tp, begins[tp] if start > ends[tp] else max(start, begins[tp]))
            while any(reader.position(tp) < ends[tp] for tp in tps):
                for records in reader.poll(timeout_ms=500, max_records=5000).values():
                    for rec in records:
                        src = source_of(list(rec.headers or []))
                        if src is not None:
                            self._already_sent.add(src)
        finally:
            reader.close()
        log.info("DLQ: %d dead letters since the checkpoint will not be sent again",
                 len(self._already_sent))
        return len(self._already_sent)

    def _reader(self) -> KafkaConsumer:
        return KafkaConsumer(**{**self._options, "group_id": None,
                                "enable_auto_commit": False,
                                "fetch_max_bytes": 64 << 20,
                                "max_partition_fetch_bytes": 16 << 20})

    def _partitions(self, reader: KafkaConsumer) -> list[TopicPartition]:
        parts = reader.partitions_for_topic(self.topic) or set()
        return [TopicPartition(self.topic, p) for p in sorted(parts)]

    def close(self) -> None:
        """Flush and close the producer."""
        self.flush()
        if self._producer is not None:
            self._producer.close()


class KafkaEventProducer:
    """Plain producer for the simulator and benchmarks: ``emit(topic, key, value)``."""

    def __init__(self, client_options: Mapping[str, Any], linger_ms: int = 5) -> None:
        self._producer = _connect(KafkaProducer, {"linger_ms": linger_ms, "acks": 1,
                                                  **client_options})

    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue one record (non-blocking unless the buffer is full)."""
        self._producer.send(topic, key=key, value=value)

    def flush(self) -> None:
        """Block until everything queued is acknowledged."""
        self._producer.flush()

    def close(self) -> None:
        """Flush and close."""
        self._producer.flush()
        self._producer.close()


def ensure_topics(client_options: Mapping[str, Any], topics: Mapping[str, int]) -> None:
    """Create the given topics (name -> partitions) if missing; existing ones are left alone."""
    admin = _connect(KafkaAdminClient, dict(client_options))
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, parts, 1) for name, parts in topics.items() if name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # a racing creator won
                admin.create_topics(new)
    finally:
        admin.close()
