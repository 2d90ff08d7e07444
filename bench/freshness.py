"""Freshness: click produced to Kafka -> a published vector version that learnt from it.

    python -m bench.freshness [--items 10000] [--probes 100] [--rate 100] [--open-loop]
                              [--cycle-interval-s S] [--split]

Real embedded broker and Redis, the real MiniLM encoder, a 10k-item catalog, simulator
traffic in the background (``--rate`` requests/s), and the worker in process. The
simulator ranks every request through the serving code (a closed loop), which one Python
process cannot do at 1,000 requests/s beside the worker; ``--open-loop`` instead produces
the traffic from a separate process (requests of 3 impressions on random catalog items,
clicks at each item's own CTR, mean 0.11; event time = now) and prints the rate it
reached. Every ``--every-s`` a probe impression + click for a random catalog item is
produced. A probe is fresh once the ``fresh`` arm's current version in Redis was trained
with a watermark at or past the probe's event time (every partition had been read past
it, and the probe's request is never held out, so its sample was in that cycle's
training). p50/p99 printed. ``--split`` runs ingestion in a process of its own
(``freshrec run --role ingest``, joined samples to the samples topic) and the trainer in
this one (``role="train"``), as the ingest tier does (docs/operations/scaling.md): two
interpreters, so parsing and joining no longer share one GIL with the cycle's Python.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from typing import Any

import msgspec
import numpy as np
from prometheus_client import CollectorRegistry

from bench.results import emit, parser, target
from consumers.kafka_source import KafkaEventProducer
from worker.config import load_settings
from worker.learning.training import is_holdout
from worker.runtime.app import build_app, vector_store
from worker.serving.service import RankService
from worker.tools.embedded import EmbeddedStack
from worker.tools.simulate import SimConfig, Simulator


def open_loop_traffic(options: dict[str, object], topic: str, items: int, rate: float,
                      stop: multiprocessing.synchronize.Event, sent: Any) -> None:
    """Requests at ``rate`` per second until ``stop``: 3 impressions of random items.

    Each item has its own click-through rate, drawn once from Beta(0.5, 4) (mean 0.11), so
    there is something to learn: with one CTR for every item, labels are pure noise, every
    candidate fits noise, and the gate rightly holds back its versions.
    """
    producer = KafkaEventProducer(options, linger_ms=5)
    enc, rng = msgspec.json.Encoder(), random.Random(7)
    ctr = np.random.default_rng(7).beta(0.5, 4.0, size=items)
    start, n = time.monotonic(), 0
    while not stop.is_set():
        ts = time.time_ns() // 1_000_000
        user = f"ol-user-{rng.randrange(50_000)}"
        for slot in range(3):
            item = rng.randrange(items)
            base = {"ts": ts, "user_id": user, "item_id": f"item-{item:06d}",
                    "request_id": f"ol-{n}", "arm": ("control", "fresh")[n % 2],
                    "position": slot, "propensity": 0.5}
            producer.emit(topic, user.encode(), enc.encode(
                {**base, "event_id": f"ol-{n}-{slot}-i", "type": "impression"}))
            if rng.random() < ctr[item]:
                producer.emit(topic, user.encode(), enc.encode(
                    {**base, "event_id": f"ol-{n}-{slot}-c", "type": "click"}))
        n += 1
        if n % 100 == 0:
            sent.value = n
            time.sleep(max(0.0, n / rate - (time.monotonic() - start)))
    producer.flush()
    sent.value = n


PHASES = (("cycles", "freshrec_train_cycle_duration_seconds"),
          ("publishes", "freshrec_publish_duration_seconds"),
          ("checkpoints", "freshrec_checkpoint_duration_seconds"))


def phase_totals(registry: CollectorRegistry) -> list[tuple[float, float]]:
    """(count, seconds) so far of each phase, then the ``fresh`` arm's cycle outcomes.

    The phases are the worker's cycles, publishes and checkpoints; the outcomes are
    (published, rejected by the gate).
    """
    outcomes = [registry.get_sample_value("freshrec_train_cycles_total",
                                          {"arm": "fresh", "outcome": o}) or 0.0
                for o in ("published", "rejected")]
    return [*((registry.get_sample_value(f"{metric}_count") or 0.0,
               registry.get_sample_value(f"{metric}_sum") or 0.0) for _, metric in PHASES),
            (outcomes[0], outcomes[1])]


def phase_figures(before: list[tuple[float, float]], after: list[tuple[float, float]]
                  ) -> dict[str, object]:
    """Count and mean seconds of each phase between two :func:`phase_totals`."""
    out: dict[str, object] = {}
    for (name, _), (n0, s0), (n1, s1) in zip(PHASES, before, after, strict=False):
        out[name] = {"count": int(n1 - n0), "mean_s": round((s1 - s0) / max(n1 - n0, 1), 3)}
    (p0, r0), (p1, r1) = before[-1], after[-1]
    out["fresh_published"], out["fresh_rejected"] = int(p1 - p0), int(r1 - r0)
    return out


def phase_summary(phases: dict[str, object]) -> str:
    """One line of :func:`phase_figures`."""
    parts = [f"{v['count']} {k}, mean {v['mean_s']:.3f} s" for k, v in phases.items()
             if isinstance(v, dict)]
    parts.append(f"'fresh' arm: {phases['fresh_published']} cycles published, "
                 f"{phases['fresh_rejected']} rejected by the gate")
    return "worker while probed: " + "; ".join(parts)


def start_ingest(overrides: dict[str, dict[str, object]], tmp: str) -> subprocess.Popen[bytes]:
    """``freshrec run --role ingest`` with the bench's settings, in a process of its own."""
    own: dict[str, dict[str, object]] = {
        **overrides, "kafka": {**overrides["kafka"], "group_id": "bench-ingest"},
        "store": {"checkpoint_dir": f"{tmp}/ingest"}, "metrics": {"port": 0}}
    sets = [f"--set={sec}.{k}={json.dumps(v)}" for sec, d in own.items() for k, v in d.items()]
    return subprocess.Popen(  # noqa: S603 - our own CLI, argv built here
        [sys.executable, "-m", "worker.tools.cli", "run", "--role", "ingest", *sets],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = parser("bench.freshness", __doc__)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--every-s", type=float, default=0.5)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--cycle-interval-s", type=float, default=None,
                    help="training.cycle_interval_s for this run (default: the setting's)")
    ap.add_argument("--split", action="store_true",
                    help="ingestion in a process of its own (--role ingest), training here")
    ap.add_argument("--open-loop", action="store_true",
                    help="traffic from a separate process, without ranking (high rates)")
    args = ap.parse_args()
    if args.smoke:
        args.items, args.probes, args.every_s, args.rate = 300, 3, 0.3, 20.0
        args.cycle_interval_s = args.cycle_interval_s or 1.0
    with EmbeddedStack() as stack, tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, dict[str, object]] = {
            "kafka": {"bootstrap_servers": stack.bootstrap},
            "redis": {"url": stack.redis_url},
            # The whole catalog holds rows (a freshness bench, not a memory one).
            "ingest": {"join_window_s": 5.0, "memory_budget_bytes": 0},
            "store": {"checkpoint_dir": f"{tmp}/ckpt"},
            "training": {"encode_per_cycle": 5000, **(
                {} if args.cycle_interval_s is None
                else {"cycle_interval_s": args.cycle_interval_s})},
        }
        ingest_proc = None
        if args.split:
            overrides["kafka"]["group_id"] = "bench-train"
            ingest_proc = start_ingest(overrides, tmp)
        settings = load_settings(None, overrides)
        app = build_app(settings, role="train" if args.split else "all")
        opts = settings.kafka.client_options()
        producer = KafkaEventProducer(opts, linger_ms=0)
        exp = settings.experiment
        sim = Simulator(replace(SimConfig(seed=3, initial_items=args.items), shift_at_request=None),
                        list(exp.arms), RankService(vector_store(settings), exp.arms, exp.salt),
                        producer.emit, salt=exp.salt)
        sim.publish_catalog()
        producer.flush()
        stop = threading.Event()

        def worker_loop() -> None:
            while not stop.is_set():
                app.worker.run_once()

        def traffic() -> None:
            start, n = time.monotonic(), 0
            while not stop.is_set():
                sim.step()
                n += 1
                time.sleep(max(0.0, n / args.rate - (time.monotonic() - start)))

        threads = [threading.Thread(target=worker_loop, daemon=True)]
        ctx = multiprocessing.get_context("spawn")
        ol_stop, ol_sent = ctx.Event(), ctx.Value("q", 0)
        ol_proc = ctx.Process(target=open_loop_traffic, daemon=True, args=(
            opts, settings.kafka.events_topic, args.items, args.rate, ol_stop, ol_sent))
        if not args.open_loop:
            threads.append(threading.Thread(target=traffic, daemon=True))
        for t in threads:
            t.start()
        t0 = time.monotonic()
        store = vector_store(settings)
        while True:  # warm-up: the whole catalog encoded and published
            info = store.current("fresh")
            if info and info.item_count >= args.items and app.pipeline.catalog.changed == 0:
                break
            time.sleep(0.5)
        warmup_s = time.monotonic() - t0
        print(f"warm-up: {args.items} items encoded and published in {warmup_s:.1f} s",
              flush=True)
        if args.open_loop:  # after the warm-up: the encoder has the CPU to itself first
            ol_proc.start()
            time.sleep(10)  # traffic at full rate before the first probe
        measure_t0, measure_n0 = time.monotonic(), ol_sent.value
        phases0 = phase_totals(app.metrics.registry)
        rng = random.Random(1)
        enc = msgspec.json.Encoder()
        pending: list[tuple[int, float]] = []
        latencies: list[float] = []
        counter = itertools.count()
        next_probe = time.monotonic()
        sent = 0
        while len(latencies) < args.probes:
            now = time.monotonic()
            if sent < args.probes and now >= next_probe:
                k = next(counter)
                req = f"probe-{k}"
                while is_holdout(req, settings.training.holdout_share):
                    req = f"probe-{next(counter)}"
                item = f"item-{rng.randrange(args.items):06d}"
                ts = time.time_ns() // 1_000_000
                base = {"ts": ts, "user_id": f"probe-user-{k}", "item_id": item,
                        "request_id": req, "arm": "fresh", "position": 0, "propensity": 1.0}
                for etype in ("impression", "click"):
                    producer.emit(settings.kafka.events_topic, f"probe-user-{k}".encode(),
                                  enc.encode({**base, "event_id": f"{req}-{etype}",
                                              "type": etype}))
                producer.flush()
                pending.append((ts, time.monotonic()))
                sent += 1
                next_probe += args.every_s
            info = store.current("fresh")
            watermark = int(info.extra.get("watermark_ms", 0)) if info else 0
            done = [p for p in pending if p[0] <= watermark]
            for _ts, sent_at in done:
                latencies.append(time.monotonic() - sent_at)
            pending = [p for p in pending if p[0] > watermark]
            time.sleep(0.02)
        phases1 = phase_totals(app.metrics.registry)
        stop.set()
        reached, rate = "", None
        if args.open_loop:
            rate = (ol_sent.value - measure_n0) / (time.monotonic() - measure_t0)
            reached = f" (open loop, reached {rate:,.0f} req/s)"
            ol_stop.set()
            ol_proc.join(30)
        for t in threads:
            t.join(30)
        lat = np.array(latencies)
        print(f"freshness over {len(lat)} clicks ({args.items}-item catalog, "
              f"{args.rate:.0f} req/s background traffic{reached}, cycle interval "
              f"{settings.training.cycle_interval_s} s, training on {app.trainer.device}"
              f"{', ingestion in its own process' if args.split else ''}): "
              f"p50 {np.percentile(lat, 50):.2f} s, "
              f"p90 {np.percentile(lat, 90):.2f} s, p99 {np.percentile(lat, 99):.2f} s, "
              f"max {lat.max():.2f} s  (target p99 <= 2.4 s)")
        phases = phase_figures(phases0, phases1)
        print(phase_summary(phases), flush=True)
        p99 = round(float(np.percentile(lat, 99)), 3)
        emit("bench.freshness", args, {
            "probes": len(lat), "items": args.items, "rate_req_s": args.rate,
            "reached_req_s": None if rate is None else round(rate, 1),
            "cycle_interval_s": settings.training.cycle_interval_s,
            "device": str(app.trainer.device), "warmup_s": round(warmup_s, 1),
            **{f"p{q}_s": round(float(np.percentile(lat, q)), 3) for q in (50, 90)},
            "p99_s": p99, "max_s": round(float(lat.max()), 3), "worker": phases},
            {"p99": target(p99, "<=", 2.4, "s")})
        app.close()
        producer.close()
        if ingest_proc is not None:
            ingest_proc.send_signal(signal.SIGINT)
            try:
                ingest_proc.wait(30)
            except subprocess.TimeoutExpired:
                ingest_proc.kill()
                ingest_proc.wait(10)


if __name__ == "__main__":
    main()
