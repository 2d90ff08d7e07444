"""Build real Kafka-backed workers and drive them in integration tests."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.kafka_dlq import KafkaDeadLetterSink
from consumers.kafka_source import KafkaEventSource, ensure_topics
from consumers.pipeline import IngestPipeline, Topics
from model_store.checkpoints import CheckpointStore
from worker.runtime.loop import Worker
from worker.runtime.metrics import Metrics


def make_topics(opts: dict[str, Any], uid: str, partitions: int = 4) -> Topics:
    topics = Topics(f"{uid}.events", f"{uid}.items", f"{uid}.dlq")
    ensure_topics(opts, {topics.events: partitions, topics.items: 1, topics.dlq: 1})
    return topics


def produce(opts: dict[str, Any], topic: str, values: list[tuple[bytes | None, bytes]]
            ) -> dict[tuple[str, int], int]:
    """Send (key, value) pairs; return the end offset per partition."""
    producer = KafkaProducer(acks="all", linger_ms=5, max_request_size=16 << 20, **opts)
    futures = [producer.send(topic, key=k, value=v) for k, v in values]
    producer.flush()
    ends: dict[tuple[str, int], int] = {}
    for fut in futures:
        md = fut.get(timeout=30)
        ends[(md.topic, md.partition)] = max(ends.get((md.topic, md.partition), 0), md.offset + 1)
    producer.close()
    return ends


def make_worker(opts: dict[str, Any], topics: Topics, group: str, ckpt_dir: Any,
                poll_max_records: int = 5000, **pipeline_kw: Any) -> Worker:
    source = KafkaEventSource([topics.events, topics.items], group, opts)
    dlq = KafkaDeadLetterSink(topics.dlq, opts)
    pipeline = IngestPipeline(source, dlq, topics, **pipeline_kw)
    return Worker(pipeline, CheckpointStore(ckpt_dir), Metrics(), checkpoint_interval_s=3600,
                  poll_max_records=poll_max_records)


def drain(worker: Worker, ends: dict[tuple[str, int], int], timeout_s: float = 60.0) -> None:
    """Step until the worker has processed up to every end offset."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.run_once()
        offs = worker.pipeline.offsets
        if all(offs.get(tp, 0) >= end for tp, end in ends.items()):
            return
    raise AssertionError(f"not drained: at {worker.pipeline.offsets}, want {ends}")


def read_dlq(opts: dict[str, Any], topic: str, n: int, timeout_s: float = 30.0
             ) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = KafkaConsumer(auto_offset_reset="earliest", enable_auto_commit=False, **opts)
    consumer.assign([TopicPartition(topic, 0)])
    out: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend((r.value, dict(r.headers)) for r in records)
    consumer.close()
    return out
