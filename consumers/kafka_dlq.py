"""The dead-letter producer: each rejected message once, whatever the broker does."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from consumers.base import DeadLetterUnavailable, SourceUnavailable
from consumers.dlq import Source, dlq_record, source_of
from consumers.events import Message, Rejection
from consumers.kafka_source import connect_client
from consumers.log_end import exact_ends, read_to_end

__all__ = ["KafkaDeadLetterSink"]

log = logging.getLogger(__name__)
_Letter = tuple[Message, Rejection, bool]  # the source record, why, headers only?
#: Refusals about one record (its size or content): that record goes headers-only.
_RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError,
                  CorruptRecordError)


class KafkaDeadLetterSink:
    """Produces rejected messages to the DLQ topic, reason in headers, once per source record.

    Values up to ``max_value_bytes`` go byte for byte; longer ones are truncated and marked
    (see :func:`consumers.dlq.dlq_record`). A record the broker still refuses is replaced by
    a headers-only record, so one hostile message never fails the batch around it.
    """

    def __init__(self, topic: str, client_options: Mapping[str, Any],
                 max_value_bytes: int = 512 * 1024, settle_s: float = 1.0,
                 settle_rounds: int = 5) -> None:
        self.topic = topic
        self.settle_s, self.settle_rounds = settle_s, settle_rounds
        self.max_value_bytes = max_value_bytes
        self._options = dict(client_options)
        # A send blocks while the producer waits for metadata or buffer space; bounded, so
        # a DLQ that cannot take records holds up one message, not the batch around it.
        self._producer_options = {
            "acks": "all", "linger_ms": 5, "max_block_ms": 5000,
            "max_request_size": max(1 << 20, max_value_bytes + 65536), **client_options}
        self._producer: KafkaProducer | None = connect_client(KafkaProducer, self._producer_options)
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
        if self._unsent:  # the producer refused the last one: queue behind it, in order
            self._unsent.append(letter)
            return
        message, rejection, headers_only = letter
        key, value, headers = dlq_record(message, rejection,
                                         0 if headers_only else self.max_value_bytes)
        try:
            if self._producer is None:  # dropped after a fatal error: a new session
                self._producer = connect_client(KafkaProducer, self._producer_options)
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
            raise DeadLetterUnavailable(f"{len(self._unsent)} dead letters not acknowledged")

    def _advance(self, partition: int, next_offset: int) -> None:
        # The latest acknowledgement wins, not the largest: acks arrive in send order, so
        # within one log they only grow, and after the broker lost the log (a new, empty
        # one) the position must follow it down, or a restore would read the new dead
        # letters from a point past them and send them again.
        self.position()[partition] = next_offset

    def position(self) -> dict[int, int]:
        """Next DLQ offset per partition (read from the broker once, then from acks)."""
        if self._position is None:
            reader = self._reader()
            try:
                tps = self._partitions(reader)
                self._position = {tp.partition: off for tp, off
                                  in exact_ends(reader, tps).items()} if tps else {}
            except (KafkaError, TimeoutError) as exc:
                raise SourceUnavailable(f"cannot find the DLQ's end: {exc}") from exc
            finally:
                reader.close()
        return self._position

    def incarnation(self) -> str:
        """The DLQ topic's id as the producer last saw it ("" if the broker has none)."""
        if self._producer is None:
            return ""
        found = self._producer._metadata.topic_id(self.topic)  # noqa: SLF001 - no public accessor
        return "" if found is None else str(found)

    def resume_after(self, position: dict[int, int], incarnation: str = "") -> int:
        """Read the dead letters written after ``position`` and remember their sources.

        A process killed while the broker was stalled (frozen, overloaded) may still have
        produce requests in the broker's socket buffers, written after this read if the
        broker gets to them later. So the log end is read again after ``settle_s`` and any
        tail read too, until it stops growing (at most ``settle_rounds`` times).
        """
        reader = self._reader()
        try:
            tps = self._partitions(reader)
            if not tps:
                return 0
            ends = exact_ends(reader, tps)
            now = reader._client.cluster.topic_id(self.topic)  # noqa: SLF001 - as above
            # Another log, or past the end: the broker lost the DLQ's log (a restarted
            # memory broker, a recreated topic), so every dead letter it holds now is newer
            # than the checkpoint.
            lost = bool(incarnation) and now is not None and str(now) != incarnation
            starts = {tp: 0 if lost or position.get(tp.partition, 0) > ends[tp]
                      else position.get(tp.partition, 0) for tp in tps}

            def remember(rec: Any) -> None:
                src = source_of(list(rec.headers or []))
                if src is not None:
                    self._already_sent.add(src)

            read_to_end(reader, starts, remember, ends=ends)
            first_end = dict(ends)
            for _ in range(self.settle_rounds):
                time.sleep(self.settle_s)
                later = exact_ends(reader, tps)
                if later == ends:
                    break
                read_to_end(reader, dict(ends), remember, ends=later)
                ends = later
        except (KafkaError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot read the DLQ back: {exc}") from exc
        finally:
            reader.close()
        log.info("DLQ: %d dead letters since the checkpoint will not be sent again "
                 "(checkpoint position %s of log %s; log %s now; read %s to %s, then to %s)",
                 len(self._already_sent), position, incarnation or "?", now,
                 {tp.partition: o for tp, o in starts.items()},
                 {tp.partition: o for tp, o in first_end.items()},
                 {tp.partition: o for tp, o in ends.items()})
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
