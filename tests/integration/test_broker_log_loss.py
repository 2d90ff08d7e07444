"""A broker that loses its log: the worker's source reads the new log from its start.

The embedded broker keeps its log in memory, so a restart is what losing a broker's disks
looks like: topics come back empty with new ids, and committed offsets are gone. Offsets
from the old log, kept by the consumer or committed again by a stale member, would skip
the new log's head or wait past its end. The soak (bench/soak.py) runs this inside a real
worker; this test pins the one rule down with a stale commit planted on purpose.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from consumers.kafka_source import KafkaEventSource, ensure_topics
from worker.tools.embedded import EmbeddedStack

pytestmark = pytest.mark.integration


def _produce(options: dict[str, object], value: bytes, per_partition: int, topic: str = "ev",
             partitions: tuple[int, ...] = (0, 1)) -> None:
    producer = KafkaProducer(**options)
    futures = [producer.send(topic, value, partition=p)
               for p in partitions for _ in range(per_partition)]
    for f in futures:
        f.get(timeout=30)
    producer.close()


def _read(src: KafkaEventSource, n: int, timeout_s: float = 90.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        try:
            got += [m.value for m in src.poll_batch(1000, 0.3)]
        except ConnectionError:  # SourceUnavailable while the broker is away
            time.sleep(0.3)
    return got


def test_a_topic_recreated_after_log_loss_is_read_from_its_start(tmp_path) -> None:
    with EmbeddedStack(tmp_path) as stack:
        options: dict[str, object] = {"bootstrap_servers": [stack.bootstrap]}
        ensure_topics(options, {"ev": 2})
        _produce(options, b"old", 20)
        src = KafkaEventSource(["ev"], "g", options)
        try:
            assert _read(src, 40) == [b"old"] * 40
            src.commit({("ev", 0): 20, ("ev", 1): 20})
            stack.broker.stop()
            stack.broker.start()
            ensure_topics(options, {"ev": 2})
            _produce(options, b"new", 10)
            # A stale commit of the old offsets reaches the new broker (as a member that
            # rejoined and committed what it had read before could do).
            stale = KafkaConsumer(**options, group_id="g", enable_auto_commit=False)
            stale.commit({TopicPartition("ev", p): OffsetAndMetadata(20, "", -1)
                          for p in (0, 1)})
            stale.close()
            assert _read(src, 20) == [b"new"] * 20
        finally:
            src.close()


def test_a_checkpoint_after_log_loss_never_pairs_old_offsets_with_the_new_log(
        tmp_path) -> None:
    """The old log's offset of a partition not read yet in the new log is reset at once.

    Kept, a checkpoint written before that partition's first new record would save it with
    the new log's id, and a restart restoring that checkpoint would skip the new log's head
    (the soak lost events this way: a full checkpoint disk, a broker restart, kills).
    """
    from consumers.dlq import MemoryDeadLetters
    from consumers.pipeline import IngestPipeline

    with EmbeddedStack(tmp_path) as stack:
        options: dict[str, object] = {"bootstrap_servers": [stack.bootstrap]}
        topic = "freshrec.events"
        ensure_topics(options, {topic: 2})
        _produce(options, b"old", 20, topic)
        src = KafkaEventSource([topic], "g", options)
        pipe = IngestPipeline(src, MemoryDeadLetters())
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and pipe.offsets != {(topic, 0): 20,
                                                                   (topic, 1): 20}:
                pipe.step(1000, 0.3)
            assert pipe.offsets == {(topic, 0): 20, (topic, 1): 20}
            stack.broker.stop()
            stack.broker.start()
            ensure_topics(options, {topic: 2})
            _produce(options, b"new", 5, topic, partitions=(1,))  # partition 0 stays empty
            while time.monotonic() < deadline and pipe.offsets.get((topic, 1)) != 5:
                try:
                    pipe.step(1000, 0.3)
                except ConnectionError:
                    time.sleep(0.3)
            saved = pipe.state_dict()
            # Nothing from the old log is left: partition 0 restarts at the new log's head.
            assert pipe.offsets == {(topic, 0): 0, (topic, 1): 5}
            assert saved["incarnations"][topic] == src.incarnations()[topic]
        finally:
            src.revoke_hook = None  # the group was lost with the log: nothing to commit
            src.close()
        _produce(options, b"new", 30, topic, partitions=(0,))
        again = KafkaEventSource([topic], "g2", options)  # the restart, from that state
        try:
            again.resume(dict(pipe.offsets), saved["incarnations"])
            got = _read(again, 30)
            assert got == [b"new"] * 30  # partition 0 from its start, none of it skipped
        finally:
            again.close()
