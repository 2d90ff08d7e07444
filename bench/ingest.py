"""Ingestion throughput: freshrec pipeline vs the raw kafka-python consume+decode rate.

Both read the same topic on the same embedded broker in the same run, through their own
consumer group; time runs from the first record to the last, so the ~3 s group join is
not counted for either. Prints events/s and the ratio (target >= 0.8).

    python bench/ingest.py [--events 200000] [--partitions 4] [--rounds 2]
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer

from bench.results import emit, parser, target
from consumers.dlq import MemoryDeadLetters
from consumers.kafka_source import CONSUMER_DEFAULTS, KafkaEventSource, ensure_topics
from consumers.pipeline import IngestPipeline, Topics
from worker.tools.embedded import EmbeddedStack
from worker.tools.synthetic import traffic


def produce(opts: dict[str, Any], topic: str, n: int) -> int:
    producer = KafkaProducer(linger_ms=20, batch_size=256 * 1024, **opts)
    sent = 0
    for obj in traffic(n, seed=1):
        obj["context"] = {"device": "android", "country": "de", "hour": 14}
        obj["model_version"] = "fresh-000042"
        producer.send(topic, key=obj["user_id"].encode(), value=msgspec.json.encode(obj))
        sent += 1
        if sent >= n:
            break
    producer.flush()
    producer.close()
    return sent


def raw_rate(opts: dict[str, Any], topic: str, n: int, group: str, decode: Any) -> float:
    consumer = KafkaConsumer(topic, group_id=group, **{**CONSUMER_DEFAULTS, **opts})
    got, start = 0, None
    while got < n:
        for records in consumer.poll(timeout_ms=200, max_records=5000).values():
            if start is None:
                start = time.perf_counter()
            for r in records:
                decode(r.value)
            got += len(records)
    elapsed = time.perf_counter() - start  # type: ignore[operator]
    consumer.close()
    return n / elapsed


def freshrec_rate(opts: dict[str, Any], topics: Topics, n: int, group: str) -> tuple[float, str]:
    source = KafkaEventSource([topics.events], group, opts)
    pipe = IngestPipeline(source, MemoryDeadLetters(), topics)
    got, start, samples, positives = 0, None, 0, 0
    while got < n:
        report = pipe.step(5000, 0.2)
        if report.messages and start is None:
            start = time.perf_counter()
        got += report.messages
        samples += report.samples
        positives += report.positives
    elapsed = time.perf_counter() - start  # type: ignore[operator]
    source.close()
    return n / elapsed, f"{samples} samples, {positives} positives, {pipe.joiner.pending} pending"


def main() -> None:
    ap = parser("bench.ingest", __doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.smoke:
        args.events, args.rounds = 3000, 1
    with EmbeddedStack() as stack:
        opts = {"bootstrap_servers": [stack.bootstrap]}
        topics = Topics("bench.events", "bench.items", "bench.dlq")
        ensure_topics(opts, {topics.events: args.partitions})
        t0 = time.perf_counter()
        n = produce(opts, topics.events, args.events)
        print(f"produced {n} events in {time.perf_counter() - t0:.1f} s "
              f"({args.partitions} partitions)")
        raws, raws_std, ours = [], [], []
        for i in range(args.rounds):
            raws.append(raw_rate(opts, topics.events, n, f"raw-msgspec-{i}", msgspec.json.decode))
            raws_std.append(raw_rate(opts, topics.events, n, f"raw-json-{i}", json.loads))
            rate, held = freshrec_rate(opts, topics, n, f"freshrec-{i}")
            ours.append(rate)
            print(f"round {i}: raw+msgspec {raws[-1]:,.0f}/s  raw+json {raws_std[-1]:,.0f}/s  "
                  f"freshrec {rate:,.0f}/s  ({held})")
        raw, raw_std, us = (statistics.median(x) for x in (raws, raws_std, ours))
        print(f"median events/s: raw consume+msgspec {raw:,.0f} | raw consume+json {raw_std:,.0f}"
              f" | freshrec parse+validate+dedupe+join+buffer {us:,.0f}")
        print(f"ratio freshrec / raw(msgspec) = {us / raw:.2f}  (target >= 0.80)")
        print(f"ratio freshrec / raw(json)   = {us / raw_std:.2f}")
        emit("bench.ingest", args, {
            "events": n, "raw_msgspec_events_per_s": round(raw), "raw_json_events_per_s":
            round(raw_std), "freshrec_events_per_s": round(us),
            "ratio_over_raw_msgspec": round(us / raw, 3),
            "ratio_over_raw_json": round(us / raw_std, 3)},
            {"ratio_over_raw_msgspec": target(round(us / raw, 3), ">=", 0.8)})


if __name__ == "__main__":
    main()
