"""Memory under a stream of all-distinct ids: the whole worker at its default budget.

    python -m bench.memory [--events 300000]

One run, one embedded broker and Redis. A backlog of ``--events`` behaviour events where
every request has a new user, a new item and a new request id (an impression each, a click
on 10% of them) is drained by two full workers (training, publishing, checkpoints), each in
a process of its own so their memory is apart, each in its own consumer group:

* ``defaults``: the settings as shipped, so the caps derive from
  ``ingest.memory_budget_bytes`` (sized for a 2 GB container);
* ``unbounded``: ``ingest.memory_budget_bytes = 0`` and no item cap, for comparison.

For each: RSS after start-up (model and encoder loaded), peak RSS (the kernel's VmHWM),
items holding a row at the end, the caps in force, and what each cap evicted (the
``freshrec_state_evicted`` counter). The defaults' peak is checked against the budget.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import emit, parser, target
from bench.sustained import drain
from consumers.kafka_source import KafkaEventProducer, ensure_topics
from consumers.log_end import exact_ends
from worker.config import load_settings
from worker.config.memory import CAP_FIELDS
from worker.runtime.app import build_app
from worker.tools.embedded import EmbeddedStack
from worker.tools.synthetic import encode, event

TOPICS = {"events": "mem.events", "items": "mem.items", "dlq": "mem.dlq"}


def status_mb(field: str) -> float:
    """One ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def produce(options: dict[str, Any], requests: int) -> None:
    """``requests`` requests of one impression each, all ids new; a click on every 10th."""
    producer = KafkaEventProducer(options, linger_ms=20)
    t0 = int(time.time() * 1000) - 100 * requests - 3_600_000  # 100 ms apart, in the past
    for k in range(requests):
        ids = {"user": f"mu{k}", "item": f"mi{k}", "req": f"mr{k}"}
        producer.emit(TOPICS["events"], ids["user"].encode(), encode(
            event("impression", eid=f"mimp{k}", ts=t0 + 100 * k, arm="fresh", **ids)))
        if k % 10 == 0:
            producer.emit(TOPICS["events"], ids["user"].encode(), encode(
                event("click", eid=f"mclk{k}", ts=t0 + 100 * k + 1, arm="fresh", **ids)))
    producer.flush()


def side(name: str, stack: dict[str, str], work: str, ingest: dict[str, Any],
         ends: dict[tuple[str, int], int], timeout_s: float, out: Any) -> None:
    """One worker, in its own process: drain the backlog, report memory."""
    settings = load_settings(None, {
        "kafka": {"bootstrap_servers": stack["bootstrap"], "group_id": f"mem-{name}",
                  "events_topic": TOPICS["events"], "items_topic": TOPICS["items"],
                  "dlq_topic": TOPICS["dlq"], "create_topics": False},
        "redis": {"url": stack["redis_url"], "prefix": f"mem-{name}"},
        "ingest": {"join_window_s": 5.0, **ingest},
        "store": {"checkpoint_dir": f"{work}/{name}/ckpt"},
        "experiment": {"arms": [{"name": "control", "lineage": "frozen", "share": 0.5},
                                {"name": "fresh", "lineage": "incremental", "share": 0.5}]},
    })
    app = build_app(settings)
    start_mb = status_mb("VmRSS")
    seconds = drain(app.worker, ends, trained=True, timeout_s=timeout_s)
    index = app.pipeline.item_index
    ing = settings.ingest
    evicted = {state: int(app.metrics.registry.get_sample_value(
        "freshrec_state_evicted_total", {"state": state}) or 0)
        for state in ("items", "user_histories", "closed_keys", "dedupe_ids")}
    out.put({"side": name, "start_rss_mb": round(start_mb), "peak_rss_mb": round(
        status_mb("VmHWM")), "end_rss_mb": round(status_mb("VmRSS")),
        "budget_mb": round(ing.memory_budget_bytes / 1e6),
        "caps": {k: getattr(ing, k) for k in CAP_FIELDS},
        "items_live": index.live, "item_rows": len(index), "evicted": evicted,
        "drain_s": round(seconds, 1)})
    app.close()


def main() -> None:
    ap = parser("bench.memory", __doc__)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--timeout-s", type=float, default=1800.0)
    args = ap.parse_args()
    sides: dict[str, dict[str, Any]] = {
        "defaults": {},
        "unbounded": {"memory_budget_bytes": 0, "max_items": 0},
    }
    if args.smoke:
        args.events, args.timeout_s = 3000, 300.0
        # Caps the smoke run's few thousand ids reach.
        sides["defaults"] = {"max_items": 400, "join_max_users": 400,
                             "join_closed_keys": 400, "dedupe_max_ids": 800}
    results = []
    with EmbeddedStack() as stack, tempfile.TemporaryDirectory() as tmp:
        options: dict[str, Any] = {"bootstrap_servers": [stack.bootstrap]}
        ensure_topics(options, {TOPICS["events"]: 4, TOPICS["items"]: 1, TOPICS["dlq"]: 1})
        produce(options, int(args.events / 1.1))
        from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

        reader = KafkaConsumer(**options, enable_auto_commit=False)
        parts = [TopicPartition(TOPICS["events"], p) for p in range(4)]
        ends = {(tp.topic, tp.partition): off for tp, off in exact_ends(reader, parts).items()}
        reader.close()
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        where = {"bootstrap": stack.bootstrap, "redis_url": stack.redis_url}
        for name, ingest in sides.items():
            proc = ctx.Process(target=side, args=(name, where, tmp, ingest, ends,
                                                  args.timeout_s, queue))
            proc.start()
            deadline = time.monotonic() + args.timeout_s + 300
            while queue.empty():
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise SystemExit(f"the {name} worker ended without a result "
                                     f"(exit code {proc.exitcode})")
                time.sleep(0.5)
            results.append(queue.get())
            proc.join(60)
    events = sum(ends.values())
    for r in results:
        print(f"{r['side']:>9}: {events:,} events in {r['drain_s']} s; RSS after start-up "
              f"{r['start_rss_mb']} MB, peak {r['peak_rss_mb']} MB, end {r['end_rss_mb']} MB; "
              f"items live {r['items_live']:,}, rows {r['item_rows']:,}; caps {r['caps']}; "
              f"evicted {r['evicted']}")
    budgeted, unbounded = results[0], results[1]
    budget = budgeted["budget_mb"]
    verdict = "within" if budgeted["peak_rss_mb"] <= budget else "OVER"
    print(f"defaults: peak {budgeted['peak_rss_mb']} MB vs budget {budget} MB: {verdict} "
          f"({budgeted['peak_rss_mb'] / budget:.2f}); without a budget the peak was "
          f"{unbounded['peak_rss_mb']} MB")
    emit("bench.memory", args, {"events": events, "sides": results},
         {"defaults_peak_rss_mb": target(budgeted["peak_rss_mb"], "<=", budget, "MB")})


if __name__ == "__main__":
    main()
