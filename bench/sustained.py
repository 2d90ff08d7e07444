"""Sustained rate: the whole worker (train, gate, publish, checkpoint) beside ingestion alone.

    python -m bench.sustained [--events 120000] [--items 10000]

One run, one embedded broker and Redis, the real text encoder, a ``--items`` catalog and a
backlog of ``--events`` behaviour events (two arms, ~2.6 events per request, CTR 0.3) on 4
partitions. Each side reads the same backlog in its own consumer group:

* ``ingest only``: the worker's loop without a trainer (parse, dedupe, join, replay
  buffers, dead letters, experiment counters, checkpoints and commits);
* ``full worker``: the same loop with training cycles on (overlapped with ingestion),
  the gate, publishing to Redis and checkpoints holding the models. The catalog is encoded
  first (a warm-up, timed apart), so the figure is the steady rate, not the first encode.

A backlog drains at the highest rate the worker sustains, so the drain rate of each side
is the figure (done = every partition read to its end, and for the full worker every
sample handed to a training cycle: under a backlog a cycle trains on up to
``max_steps_per_cycle`` batches of them, the rest through the recent replay window).
Prints both and ``ratio full/ingest-only``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import emit, parser, target
from consumers.kafka_source import KafkaEventProducer, ensure_topics
from consumers.log_end import exact_ends
from model_store.checkpoints import CheckpointStore
from worker.config import load_settings
from worker.runtime.app import App, build_app
from worker.runtime.loop import Worker
from worker.tools.embedded import EmbeddedStack
from worker.tools.synthetic import encode, traffic

WORDS = ("red", "blue", "summer", "winter", "running", "hiking", "kitchen", "garden", "cotton",
         "leather", "classic", "sport", "travel", "office", "kids", "vintage")


def produce_catalog(options: dict[str, Any], items_topic: str, items: int) -> None:
    """``items`` catalog texts."""
    producer = KafkaEventProducer(options, linger_ms=20)
    for k in range(items):
        words = " ".join(WORDS[(k * 7 + j * 3) % len(WORDS)] for j in range(4))
        producer.emit(items_topic, f"i{k}".encode(), encode(
            {"item_id": f"i{k}", "ts": 1, "text": f"{words} item {k}",
             "attributes": {"category": WORDS[k % len(WORDS)]}}))
    producer.flush()


def produce_events(options: dict[str, Any], events_topic: str, items: int,
                   events: int) -> None:
    """A backlog of about ``events`` behaviour events over the catalog's items."""
    producer = KafkaEventProducer(options, linger_ms=20)
    t0 = int(time.time() * 1000) - 2 * 3600_000  # event time behind log time
    for e in traffic(int(events / 2.6), seed=11, t0=t0, users=20_000, items=items,
                     arms=("control", "fresh")):
        producer.emit(events_topic, e["user_id"].encode(), encode(e))
    producer.flush()


def drain(worker: Worker, ends: dict[tuple[str, int], int], trained: bool,
          timeout_s: float) -> float:
    """Seconds until the backlog is read (and, with a trainer, taken by a cycle)."""
    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.run_once()
        read_all = all(worker.pipeline.offsets.get(tp, 0) >= end for tp, end in ends.items())
        if read_all and (not trained or (
                worker.pipeline.pending() == 0 and not worker.cycle_running)):
            seconds = time.perf_counter() - start
            worker.checkpoint()
            return seconds
    raise TimeoutError(f"backlog not drained in {timeout_s:.0f} s")


def app_for(stack: EmbeddedStack, work: Path, group: str, topics: dict[str, str]) -> App:
    settings = load_settings(None, {
        "kafka": {"bootstrap_servers": stack.bootstrap, "group_id": group,
                  "events_topic": topics["events"], "items_topic": topics["items"],
                  "dlq_topic": topics["dlq"], "create_topics": False},
        "redis": {"url": stack.redis_url, "prefix": group},
        "ingest": {"join_window_s": 5.0},
        "store": {"checkpoint_dir": str(work / group / "ckpt")},
        "training": {"encode_per_cycle": 5000},
    })
    return build_app(settings)


def main() -> None:
    ap = parser("bench.sustained", __doc__)
    ap.add_argument("--events", type=int, default=120_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--timeout-s", type=float, default=1200.0)
    args = ap.parse_args()
    if args.smoke:
        args.events, args.items, args.timeout_s = 3000, 300, 300.0
    topics = {"events": "sus.events", "items": "sus.items", "dlq": "sus.dlq"}
    with EmbeddedStack() as stack, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        options: dict[str, Any] = {"bootstrap_servers": [stack.bootstrap]}
        ensure_topics(options, {topics["events"]: 4, topics["items"]: 1, topics["dlq"]: 1})
        produce_catalog(options, topics["items"], args.items)
        items_end = {(topics["items"], 0): args.items}
        # Both sides join their group and take in the catalog first, untimed; the full
        # worker also encodes every text. Only then is the events backlog produced.
        base = app_for(stack, work, "ingest-only", topics)
        ingest = Worker(base.pipeline, CheckpointStore(work / "ingest-only" / "ck2"),
                        base.metrics, monitor=base.monitor,
                        checkpoint_interval_s=base.settings.ingest.checkpoint_interval_s)
        drain(ingest, items_end, trained=False, timeout_s=args.timeout_s)
        full = app_for(stack, work, "full", topics)
        start = time.perf_counter()
        drain(full.worker, items_end, trained=False, timeout_s=args.timeout_s)
        while full.pipeline.changed_items() > 0 or full.worker.cycle_running:
            full.worker.run_once()  # every catalog text encoded before the clock starts
        warm_s = time.perf_counter() - start
        produce_events(options, topics["events"], args.items, args.events)
        from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

        reader = KafkaConsumer(**options, enable_auto_commit=False)
        parts = [TopicPartition(topics["events"], p) for p in range(4)]
        ends = {(tp.topic, tp.partition): off for tp, off in exact_ends(reader, parts).items()}
        reader.close()
        events = sum(ends.values())
        ingest_s = drain(ingest, ends, trained=False, timeout_s=args.timeout_s)
        base.close()
        full_s = drain(full.worker, ends, trained=True, timeout_s=args.timeout_s)
        cycles, device = full.trainer.cycles, str(full.trainer.device)
        full.close()

    out = {
        "events": events, "items": args.items,
        "ingest_only_events_per_s": round(events / ingest_s),
        "full_worker_events_per_s": round(events / full_s),
        "ratio_full_over_ingest_only": round(ingest_s / full_s, 3),
        "full_worker_cycles": cycles, "catalog_warmup_s": round(warm_s, 1),
        "training_device": device,
    }
    print(f"ingest only  {out['ingest_only_events_per_s']:>8,} events/s")
    print(f"full worker  {out['full_worker_events_per_s']:>8,} events/s ({cycles} cycles, "
          f"training on {device})")
    print(f"ratio full/ingest-only {out['ratio_full_over_ingest_only']:.3f} (target >= 0.5)")
    emit("bench.sustained", args, out, {"ratio_full_over_ingest_only": target(
        out["ratio_full_over_ingest_only"], ">=", 0.5)})


if __name__ == "__main__":
    main()
