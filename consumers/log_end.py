"""Exact log-end offsets on any Kafka-protocol broker.

``ListOffsets(latest)`` is the log end on Apache Kafka, but the embedded broker (tansu 0.6)
answers with the base offset of the partition's last record batch plus one: a lower bound
that falls short by the batch's size minus one. Anything that reads "up to the end" with it
stops early and misses the tail of the last batch, and a caught-up position looks like it
is past the end. The high watermark in a fetch response is exact on both, so the end is
the larger of the two, with one small fetch per non-empty partition to learn it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

__all__ = ["exact_ends", "read_to_end"]


def exact_ends(reader: KafkaConsumer, tps: Sequence[TopicPartition],
               timeout_s: float = 30.0) -> dict[TopicPartition, int]:
    """Each partition's log end (the next offset to be written).

    ``reader`` must be a consumer without a group; its assignment is replaced by the
    non-empty partitions of ``tps``. Raises ``TimeoutError`` if no fetch answers in time.
    """
    ends: dict[TopicPartition, int] = dict(reader.end_offsets(list(tps)))
    probe = [tp for tp in tps if ends[tp] > 0]
    if not probe:
        return ends
    reader.assign(probe)
    for tp in probe:  # the last batch starts at or before end - 1 on either kind of broker
        reader.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + timeout_s
    while any(reader.highwater(tp) is None for tp in probe):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no fetch answered for {probe} in {timeout_s:.0f} s")
        reader.poll(timeout_ms=200, max_records=1)
    return {tp: max(ends[tp], (reader.highwater(tp) or 0) if tp in probe else 0)
            for tp in tps}


def read_to_end(reader: KafkaConsumer, starts: dict[TopicPartition, int],
                handle: Callable[[ConsumerRecord], None], timeout_s: float = 120.0,
                ends: dict[TopicPartition, int] | None = None) -> None:
    """Hand every record from ``starts`` (offset per partition) to the log end to ``handle``.

    Starts before the log start are moved up to it. ``ends`` is :func:`exact_ends` when the
    caller has it already. Raises ``TimeoutError`` if the end is not reached in time (a
    broker that stopped answering).
    """
    tps = list(starts)
    if not tps:
        return
    ends = ends if ends is not None else exact_ends(reader, tps)
    begins = reader.beginning_offsets(tps)
    reader.assign(tps)
    for tp in tps:
        reader.seek(tp, min(max(starts[tp], begins[tp]), ends[tp]))
    deadline = time.monotonic() + timeout_s
    while any(reader.position(tp) < ends[tp] for tp in tps):
        if time.monotonic() > deadline:
            raise TimeoutError(f"log end {ends} not reached in {timeout_s:.0f} s")
        for records in reader.poll(timeout_ms=500, max_records=5000).values():
            for rec in records:
                handle(rec)
