"""The dead-letter producer failing on its own while the events keep flowing.

A real worker on the real broker and Redis; its DLQ producer is made to refuse every
record (as a producer does whose metadata or buffer wait times out) while good and bad
messages keep arriving. The worker must keep running, name the DLQ in ``/readyz`` and
``freshrec_up``, hold its offsets, and once the producer recovers end with one dead letter
per bad message and the counters exact.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

from consumers.dlq import source_of
from consumers.log_end import read_to_end
from model_store.counters import RedisCounters
from model_store.redis_store import connect
from tests.helpers import wait_for
from tests.integration.live_worker import LiveWorker, arm_counts
from tests.integration.test_outages import metrics_text, status
from tests.integration.test_slow_redis import readyz
from tests.integration.test_worker_e2e import overrides
from worker.tools.synthetic import traffic

pytestmark = pytest.mark.integration


class FailingProducer:
    """The real producer, but ``send`` times out while ``failing`` is set."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failing = threading.Event()
        self.refused = 0

    def send(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing.is_set():
            self.refused += 1
            raise KafkaTimeoutError("injected: no buffer space or metadata in time")
        return self.real.send(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def dead_letters(bootstrap: str, topic: str) -> list[Any]:
    """The source of every record on the DLQ."""
    reader = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    out: list[Any] = []
    try:
        read_to_end(reader, {TopicPartition(topic, 0): 0},
                    lambda r: out.append(source_of(list(r.headers or []))))
    finally:
        reader.close()
    return out


@pytest.mark.timeout(300)
def test_a_failing_dlq_producer_holds_offsets_and_loses_no_dead_letter(
        stack, uid, tmp_path, tiny_bert_dir):
    worker = LiveWorker(overrides(stack, uid, tmp_path, tiny_bert_dir))
    base, loop, settings = worker.base, worker.loop, worker.settings
    dlq_topic = settings.kafka.dlq_topic
    events = list(traffic(600, seed=9, arms=("control", "fresh")))
    want = arm_counts(events)
    counters = RedisCounters(connect(stack.redis_url), uid)

    def send_bad(n: int, tag: str) -> None:
        for i in range(n):
            worker.producer.emit(settings.kafka.events_topic, b"u-bad",
                                 f'{{"broken {tag} {i}'.encode())
        worker.producer.flush()

    try:
        worker.send(events[:200])
        send_bad(20, "before")
        wait_for(lambda: len(dead_letters(stack.bootstrap, dlq_topic)) >= 20, 90,
                 what="the first dead letters")
        sink = worker.app.worker.pipeline.dead_letters
        failing = FailingProducer(sink._producer)  # noqa: SLF001 - the fault goes inside
        sink._producer = failing  # noqa: SLF001
        failing.failing.set()
        worker.send(events[200:400])
        send_bad(30, "during")
        wait_for(lambda: status(base + "/readyz") == 503, 60, what="readyz to name the DLQ")
        detail = readyz(base)["dependencies"]["dlq"]  # type: ignore[index]
        assert "dead letters not acknowledged" in str(detail), detail
        assert 'freshrec_up{dependency="dlq"} 0.0' in metrics_text(base)
        assert loop.is_alive() and status(base + "/healthz") == 200
        assert len(dead_letters(stack.bootstrap, dlq_topic)) == 20
        failing.failing.clear()
        wait_for(lambda: status(base + "/readyz") == 200, 90, what="ready once the DLQ takes")
        worker.send(events[400:])
        send_bad(10, "after")

        def exact() -> bool:
            got = counters.arm_totals()
            return all(got.get(a, {}).get(t, 0) == n for (a, t), n in want.items())

        wait_for(exact, 120, what="arm counters to match what was sent")
        wait_for(lambda: len(dead_letters(stack.bootstrap, dlq_topic)) >= 60, 90,
                 what="every dead letter")
        assert failing.refused > 0
        assert 'freshrec_up{dependency="dlq"} 1.0' in metrics_text(base)
    finally:
        worker.close()
    assert not loop.is_alive()
    sources = dead_letters(stack.bootstrap, dlq_topic)
    assert len(sources) == 60 and len(set(sources)) == 60
    assert exact()
