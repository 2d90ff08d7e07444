"""Offsets read before a rebalance are never committed after it (real broker, real group).

Every rebalance hands partitions out again. A member that commits an offset it read before
that would overwrite the progress of whoever held the partition meanwhile; after a broker
that lost its log (a restarted memory broker, lost disks) the old offset even points past
the new log, and the group would skip what arrives there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.kafka_source import KafkaEventSource, ensure_topics

pytestmark = pytest.mark.integration


def _produce(options: dict[str, object], topic: str, partition: int, n: int) -> None:
    producer = KafkaProducer(**options)
    for f in [producer.send(topic, b"v", partition=partition) for _ in range(n)]:
        f.get(timeout=30)
    producer.close()


def _poll(sources: list[KafkaEventSource], read: dict[tuple[str, int], int],
          done: Callable[[], bool], timeout_s: float = 150.0) -> None:
    """Poll every source, each on its own thread as members of a group run, until ``done()``,
    noting the next offset read per partition.

    One thread polling every member in turn can stall a join: the coordinator answers a
    member's JoinGroup only once every member has rejoined, and the others are not polled
    while that member waits. Threads keep every member's poll going, as separate processes
    would; the margin covers a slow rebalance on a busy machine.
    """
    stop = threading.Event()
    lock = threading.Lock()

    def member(src: KafkaEventSource) -> None:
        while not stop.is_set():
            for m in src.poll_batch(1000, 0.2):
                with lock:
                    read[(m.topic, m.partition)] = m.offset + 1

    threads = [threading.Thread(target=member, args=(src,), daemon=True) for src in sources]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with lock:
                if done():
                    break
            assert time.monotonic() < deadline, "the group did not settle in time"
            assert all(t.is_alive() for t in threads), "a member's poll failed"
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


@pytest.mark.timeout(480)  # three group changes, each allowed _poll's margin
def test_a_partition_given_back_is_not_committed_at_its_old_offset(kafka_options, uid) -> None:
    topic, group = f"stale-{uid}", f"g-{uid}"
    ensure_topics(kafka_options, {topic: 2})
    _produce(kafka_options, topic, 0, 20)
    _produce(kafka_options, topic, 1, 20)
    a = KafkaEventSource([topic], group, kafka_options)
    b = None
    try:
        a_read: dict[tuple[str, int], int] = {}
        _poll([a], a_read, lambda: a_read == {(topic, 0): 20, (topic, 1): 20})
        a.commit(a_read)
        # b joins: the group splits the partitions, and b moves one of them on.
        b = KafkaEventSource([topic], group, kafka_options)
        b_read: dict[tuple[str, int], int] = {}
        _poll([a, b], b_read, lambda: len(a.assignment()) == 1 == len(b.assignment()))
        (moved,) = b.assignment()
        _produce(kafka_options, topic, moved[1], 10)
        _poll([b], b_read, lambda: b_read.get(moved) == 30)
        b.commit(b_read)
        b.close()
        b = None
        # The partition comes back to a, which still holds offset 20 for it.
        _poll([a], {}, lambda: len(a.assignment()) == 2)
        a.commit(a_read)
        probe = KafkaConsumer(**kafka_options, group_id=group, enable_auto_commit=False)
        try:
            assert probe.committed(TopicPartition(*moved)) == 30  # b's progress stands
        finally:
            probe.close()
    finally:
        a.close()
        if b is not None:
            b.close()


def test_records_handed_back_at_the_last_commit_are_not_handed_out_twice(
        kafka_options, uid) -> None:
    """A member the group lost gets its partitions back at their last commit; what it read
    since then is in its state already, so the source skips it instead of redelivering."""
    topic, group = f"redeliver-{uid}", f"g-{uid}"
    ensure_topics(kafka_options, {topic: 1})
    _produce(kafka_options, topic, 0, 20)
    src = KafkaEventSource([topic], group, kafka_options)
    try:
        read: dict[tuple[str, int], int] = {}
        _poll([src], read, lambda: read.get((topic, 0)) == 20)
        src.commit({(topic, 0): 5})
        # What a rejoin does to the position: back to the committed offset.
        src._consumer.seek(TopicPartition(topic, 0), 5)  # noqa: SLF001
        _produce(kafka_options, topic, 0, 3)
        got: list[int] = []
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            got += [m.offset for m in src.poll_batch(1000, 0.2)]
        assert got == [20, 21, 22]
    finally:
        src.close()
