"""Quality on the simulator: incremental vs frozen-after-warm-up, around a preference shift.

Progressive AUC and CTR of both lineages, closed loop, in process, real MiniLM.

    python -m bench.quality [--requests 40000] [--shift-at 20000] [--cycle-every 1000]

Both lineages are scored on the same new samples each cycle (progressive validation), so the
AUC numbers compare models, not traffic. CTR per arm is what the simulated users clicked on
the slates each arm served.
"""

from __future__ import annotations

import itertools
import math
import statistics

from bench.results import emit, parser
from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.memory_store import MemoryVectorStore
from worker.config import ArmSettings, TrainingSettings
from worker.learning.encoder import SemanticCache, TextEncoder
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.serving.service import RankService
from worker.tools.simulate import SimConfig, Simulator
from worker.tools.synthetic import ListSource


def main() -> None:
    ap = parser("bench.quality", __doc__)
    ap.add_argument("--requests", type=int, default=40_000)
    ap.add_argument("--shift-at", type=int, default=20_000)
    ap.add_argument("--cycle-every", type=int, default=1000)
    ap.add_argument("--warmup-cycles", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if args.smoke:
        args.requests, args.shift_at, args.cycle_every, args.warmup_cycles = 1500, 900, 150, 2
    arms = [ArmSettings(name="frozen", lineage="frozen", share=0.5),
            ArmSettings(name="incremental", lineage="incremental", share=0.5)]
    store = MemoryVectorStore()
    source = ListSource([])
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    encoder = TextEncoder()
    trainer = Trainer(arms, TrainingSettings(cycle_interval_s=0, warmup_cycles=args.warmup_cycles),
                      ItemTable(encoder.dim), SemanticCache(encoder).get, store, seed=args.seed)
    clock = itertools.count(1_700_000_000_000, 20)

    def produce(topic: str, key: bytes, value: bytes) -> None:
        source.messages.append(RawMessage(topic, 0, len(source.messages), key, value))

    sim = Simulator(SimConfig(seed=args.seed, shift_at_request=args.shift_at), arms,
                    RankService(store, arms), produce, clock_ms=lambda: next(clock))
    sim.publish_catalog()
    curves: dict[str, list[tuple[int, float]]] = {a.name: [] for a in arms}
    phase_ctr: dict[str, dict[str, list[int]]] = {"before": {}, "after": {}}
    for n in range(args.requests):
        shown = sim.step()
        phase = "before" if n < args.shift_at else "after"
        tally = phase_ctr[phase].setdefault(shown["arm"], [0, 0])
        tally[0] += len(shown["shown"])
        tally[1] += sum(shown["clicked"])
        if (n + 1) % args.cycle_every == 0:
            while source.pos < len(source.messages):
                pipeline.step(5000)
            for report in trainer.run_cycle(pipeline, float(n)):
                if not math.isnan(report.progressive_auc):
                    curves[report.arm].append((n + 1, report.progressive_auc))
    print(f"{args.requests} requests, shift at {args.shift_at}, cycle every {args.cycle_every}, "
          f"frozen after {args.warmup_cycles} warm-up cycles")
    print("requests  " + "  ".join(f"{a.name:>12}" for a in arms))
    for k in range(0, len(curves["incremental"]), max(1, len(curves["incremental"]) // 12)):
        row = [curves[a.name][k][1] if k < len(curves[a.name]) else float("nan") for a in arms]
        print(f"{curves['incremental'][k][0]:>8}  " + "  ".join(f"{v:12.4f}" for v in row))
    auc: dict[str, dict[str, float]] = {}
    for phase, lo, hi in (("before", args.warmup_cycles * args.cycle_every, args.shift_at),
                          ("after", args.shift_at, args.requests + 1)):
        means = {a.name: statistics.mean(v for n, v in curves[a.name] if lo < n <= hi)
                 for a in arms}
        auc[phase] = {k: round(v, 4) for k, v in means.items()}
        print(f"mean progressive AUC {phase} shift: " +
              ", ".join(f"{k}={v:.4f}" for k, v in means.items()))
    ctr: dict[str, dict[str, float]] = {}
    for phase, tallies in phase_ctr.items():
        ctr[phase] = {arm: round(c / i, 4) for arm, (i, c) in sorted(tallies.items())}
        print(f"CTR {phase} shift: " + ", ".join(
            f"{arm}={c / i:.4f} ({c}/{i})" for arm, (i, c) in sorted(tallies.items())))
    emit("bench.quality", args, {"progressive_auc": auc, "ctr": ctr})


if __name__ == "__main__":
    main()
