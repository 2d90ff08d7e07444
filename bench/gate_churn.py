"""Gate churn: how often the ``fresh`` candidate is rejected on traffic of many rare items.

    python -m bench.gate_churn [--items 100000] [--rate 1000] [--seconds 30]
                               [--per-cycle-s 1.0] [--text-dim 32] [--student]
                               [--set replay_ratio=1.0 ...]

No broker, no Redis, no text encoder: the open-loop traffic of ``bench.freshness`` (3
impressions a request on items drawn uniformly, clicks at each item's own CTR from
Beta(0.5, 4)) goes through the real pipeline and trainer in process, one cycle per
``--per-cycle-s`` seconds of traffic, with random text vectors (norm ~1, like MiniLM's).
Prints each cycle's gate difference (candidate minus served log-loss on held-out
requests; a rejection is one above ``gate_tolerance``), the outcomes, and the mean
seconds a cycle took after warm-up (every lineage: progressive validation, training,
gate, publish to an in-memory store) and how far into it the ``fresh`` arm's version was
ready. A rejected cycle publishes nothing, so freshness
waits for the next one that passes: this isolates that tail from everything else.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter

import msgspec
import numpy as np
import torch

from bench.results import emit, parser
from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.memory_store import MemoryVectorStore
from worker.config import ArmSettings, ExperimentSettings, TrainingSettings
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.tools.synthetic import ListSource

TOPIC = "freshrec.events"


def open_loop(items: int, rate: int, seconds: int) -> list[RawMessage]:
    """``seconds`` of requests at ``rate``/s, as messages of one partition."""
    rng, enc = random.Random(7), msgspec.json.Encoder()
    ctr = np.random.default_rng(7).beta(0.5, 4.0, size=items)
    out: list[RawMessage] = []
    offset = itertools.count()
    for n in range(rate * seconds):
        base = {"ts": 1_700_000_000_000 + n * 1000 // rate,
                "user_id": f"u{rng.randrange(50_000)}", "request_id": f"r{n}",
                "arm": ("control", "fresh")[n % 2], "propensity": 0.5}
        for slot in range(3):
            item = rng.randrange(items)
            ev = {**base, "item_id": f"item-{item:06d}", "position": slot}
            out.append(RawMessage(TOPIC, 0, next(offset), None, enc.encode(
                {**ev, "event_id": f"{n}-{slot}-i", "type": "impression"})))
            if rng.random() < ctr[item]:
                out.append(RawMessage(TOPIC, 0, next(offset), None, enc.encode(
                    {**ev, "event_id": f"{n}-{slot}-c", "type": "click"})))
    return out


def main() -> None:
    ap = parser("bench.gate_churn", __doc__)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--per-cycle-s", type=float, default=1.0,
                    help="seconds of traffic between two cycles")
    ap.add_argument("--text-dim", type=int, default=32, help="384 = MiniLM's width")
    ap.add_argument("--student", action="store_true",
                    help="a third arm: a distilled 16-d student of 'fresh' (as in the demo)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a [training] setting, e.g. --set replay_ratio=0.5 (repeatable)")
    args = ap.parse_args()
    if args.smoke:
        args.items, args.rate, args.seconds = 2000, 200, 8
    torch.manual_seed(0)
    messages = open_loop(args.items, args.rate, args.seconds)
    source = ListSource(messages)
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    changed = dict(kv.split("=", 1) for kv in args.set)
    cfg = TrainingSettings.model_validate({**changed, "cycle_interval_s": 0})
    dim = args.text_dim
    table = ItemTable(dim, torch.device("cpu"), pipeline.item_index)
    table.set_semantic([f"item-{k:06d}" for k in range(args.items)],
                       np.random.default_rng(1).normal(size=(args.items, dim)) / dim ** 0.5)
    arms = ExperimentSettings().arms
    if args.student:
        arms = (*arms, ArmSettings(name="student", lineage="distilled", share=0.0001, dim=16,
                                   teacher="fresh"))
    trainer = Trainer(arms, cfg, table,
                      lambda texts: np.zeros((len(texts), dim), np.float32),
                      MemoryVectorStore(), dim=64, seed=0)
    per_cycle = int(len(messages) / args.seconds * args.per_cycle_s)
    outcomes: Counter[str] = Counter()
    diffs: list[float] = []
    seconds: list[float] = []
    fresh: list[int] = []
    ready: list[float] = []  # the fresh arm's report: cycle start -> its version published
    clock = itertools.count()
    while source.pos < len(messages):
        pipeline.step(per_cycle)
        start = time.perf_counter()
        reports = trainer.run_cycle(pipeline, float(next(clock)))
        if trainer.cycles > cfg.warmup_cycles and source.pos < len(messages):
            seconds.append(time.perf_counter() - start)  # whole cycles after warm-up
            fresh.append(reports[0].n_fresh)
            ready.extend(r.duration_s for r in reports if r.arm == "fresh")
        for report in reports:
            if report.arm != "fresh":
                continue
            outcomes[report.outcome.value] += 1
            if report.gate_served_loss == report.gate_served_loss:  # not NaN
                diffs.append(report.gate_candidate_loss - report.gate_served_loss)
    print("gate (candidate - served log-loss) per cycle:",
          " ".join(f"{d:+.3f}" for d in diffs))
    print(f"{args.items} items, {args.rate} req/s, {len(diffs)} gated cycles of "
          f"{args.per_cycle_s:g} s of traffic, {dim}-d texts, training "
          f"{changed or 'defaults'}: {dict(outcomes)} (tolerance {cfg.gate_tolerance})")
    if seconds:
        print(f"cycle after warm-up: mean {np.mean(seconds):.3f} s, median "
              f"{np.median(seconds):.3f} s over {len(seconds)} cycles "
              f"of {np.mean(fresh):,.0f} new samples; the 'fresh' arm's version ready after "
              f"{np.mean(ready):.3f} s mean")
    emit("bench.gate_churn", args, {
        "gated_cycles": len(diffs), "outcomes": dict(outcomes),
        "tolerance": cfg.gate_tolerance, "gate_diffs": [round(d, 4) for d in diffs],
        "cycle_mean_s": round(float(np.mean(seconds)), 3) if seconds else None,
        "new_samples_per_cycle": round(float(np.mean(fresh))) if fresh else None,
        "fresh_ready_mean_s": round(float(np.mean(ready)), 3) if ready else None})


if __name__ == "__main__":
    main()
