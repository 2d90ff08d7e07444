"""Exact log ends on the real broker, whose ListOffsets may stop at a batch's base offset."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.kafka_source import ensure_topics
from consumers.log_end import exact_ends, read_to_end

pytestmark = pytest.mark.integration


def _batch(options: dict[str, object], topic: str, first: int, n: int) -> None:
    """``n`` records in one batch (a long linger and one flush), from offset ``first``."""
    producer = KafkaProducer(**options, linger_ms=500)
    futures = [producer.send(topic, b"r%d" % i, partition=0) for i in range(n)]
    producer.flush()
    assert [f.get(timeout=30).offset for f in futures] == list(range(first, first + n))
    producer.close()


def test_exact_ends_and_read_to_end_cover_the_whole_last_batch(kafka_options, uid) -> None:
    topic = f"log-end-{uid}"
    ensure_topics(kafka_options, {topic: 2})
    tp, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)
    reader = KafkaConsumer(**kafka_options, enable_auto_commit=False)
    try:
        assert exact_ends(reader, [tp]) == {tp: 0}  # empty: no fetch needed
        _batch(kafka_options, topic, 0, 5)
        _batch(kafka_options, topic, 5, 3)
        # ListOffsets alone may answer 6 here (the last batch's base + 1); never more.
        assert reader.end_offsets([tp])[tp] <= 8
        assert exact_ends(reader, [tp, empty]) == {tp: 8, empty: 0}
        seen: list[int] = []
        read_to_end(reader, {tp: 0}, lambda r: seen.append(r.offset))
        assert seen == list(range(8))
        tail: list[bytes] = []
        read_to_end(reader, {tp: 6}, lambda r: tail.append(r.value))
        assert tail == [b"r1", b"r2"]
    finally:
        reader.close()
