"""Dead letters of a killed worker that the broker appends only after the restart read back.

Seen in the fault soak: the worker was killed just as the broker froze (SIGSTOP). Its last
produce requests sat in the frozen broker's socket buffers; once thawed, the broker
appended them *after* the restarted worker had read the DLQ back, so the restart sent those
dead letters a second time. Here the late append is made deterministic: the first worker's
last dead letters are held, and written to the real broker's DLQ just after the restarted
worker's first read-back returns.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from kafka import KafkaProducer

import consumers.kafka_dlq as kafka_dlq
from consumers.dlq import dlq_record
from tests.helpers import traffic
from tests.integration.ingest_helpers import drain, make_topics, make_worker, produce, read_dlq
from tests.integration.test_ingest_kafka import keyed

pytestmark = pytest.mark.integration


def test_dead_letters_appended_after_the_read_back_are_not_sent_again(
        kafka_options, uid, tmp_path, monkeypatch):
    topics = make_topics(kafka_options, uid, partitions=2)
    good = list(traffic(120, seed=8))
    bad = [b"not json", b"{}", b'{"type": "impression"}', b"[1, 2]"]
    first = make_worker(kafka_options, topics, uid, tmp_path, poll_max_records=30)
    first.restore()
    drain(first, produce(kafka_options, topics.events, keyed(good[:1])))
    first.checkpoint()  # the restart reads again from here
    held: list[tuple[Any, Any]] = []  # in the frozen broker's buffers when the kill lands
    first.pipeline.dead_letters.send = lambda m, r: held.append((m, r))  # type: ignore[method-assign]
    drain(first, produce(kafka_options, topics.events,
                         keyed(good[1:60]) + [(b"u1", v) for v in bad] + keyed(good[60:])))
    assert len(held) == len(bad)
    first.pipeline.source.revoke_hook = None  # a kill -9: no hook, no commit
    first.pipeline.source.close()

    real_read = kafka_dlq.read_to_end
    calls = []

    def read_then_thaw(*args: Any, **kwargs: Any) -> None:
        real_read(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # the broker thaws: the killed worker's letters land now
            producer = KafkaProducer(**kafka_options)
            for message, rejection in held:
                key, value, headers = dlq_record(message, rejection, 1 << 20)
                producer.send(topics.dlq, key=key, value=value, headers=headers)
            producer.flush()
            producer.close()

    monkeypatch.setattr(kafka_dlq, "read_to_end", read_then_thaw)
    second = make_worker(kafka_options, topics, uid, tmp_path)
    try:
        assert second.restore()
        assert len(calls) >= 2  # the tail was read again after it settled
        drain(second, produce(kafka_options, topics.events, keyed(good[:1])))
        second.checkpoint()
        dead = read_dlq(kafka_options, topics.dlq, len(bad) + 1, timeout_s=8)
        sources = Counter((h["freshrec.source.partition"], h["freshrec.source.offset"])
                          for _, h in dead)
        assert len(dead) == len(bad) and max(sources.values()) == 1, sources
    finally:
        second.pipeline.source.close()
