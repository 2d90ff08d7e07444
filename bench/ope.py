"""Off-policy evaluation on a closed loop: the fresh arm's CTR estimated from the control's logs.

    python -m bench.ope [--warmup 20000] [--requests 30000] [--epsilon 0.3] [--slots 5]

In process, as ``bench.quality``: the simulator asks the real serving rules for every slate,
the real ingestion pipeline joins the events, the real trainer fine-tunes both arms
(real MiniLM text vectors). The control arm serves its frozen model with ε-greedy
exploration (so its propensities cover what another policy would show); the fresh arm
serves its incremental model greedily. After ``--warmup`` requests of training both arms
stay at their versions and ``--requests`` more are served and logged: the measured period.

On that period, ``freshrec ope``'s code (:func:`worker.tools.ope.evaluate`) estimates from
the **control arm's** requests alone the CTR the **fresh arm's** version would get with its
greedy policy (IPS, SNIPS, DR, and the direct method) over the top 1, 2, ... ``--slots``
positions, and the bench compares each with:

- the fresh arm's **measured online CTR** over the same period (its own requests, same
  positions): the target is that the estimators' 95% intervals cover it on the top slot;
- the **simulator's truth** on the same contexts: the fresh arm's greedy slate for each of
  the control's requests, scored with the true click probabilities.

The slate's cascade weights multiply down the positions, so how deep an estimate can go
depends on how often the two policies agree: the effective sample size printed per depth
says how many logged requests each estimate is worth.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from bench.results import emit, parser, target
from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.memory_store import MemoryVectorStore
from worker.config import ArmSettings, TrainingSettings
from worker.learning.encoder import SemanticCache, TextEncoder
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.serving.ranker import Ranker
from worker.serving.service import RankService
from worker.tools.ope import Decision, evaluate, load_target, read_decisions
from worker.tools.simulate import SimConfig, Simulator
from worker.tools.synthetic import ListSource

ESTIMATORS = ("ips", "snips", "dr", "dm")


def _online(decisions: list[Decision], arm: str, slots: int) -> dict[str, float]:
    """An arm's CTR over its own requests, top ``slots`` positions, with a 95% interval."""
    per = np.array([sum(d.shown[j][0] in d.clicked for j in range(slots)) / slots
                    for d in decisions if d.arm == arm and len(d.shown) >= slots])
    se = float(per.std(ddof=1) / math.sqrt(len(per)))
    mean = float(per.mean())
    return {"value": round(mean, 6), "low": round(mean - 1.96 * se, 6),
            "high": round(mean + 1.96 * se, 6), "requests": len(per)}


def _truth(sim: Simulator, decisions: list[Decision], ranker: Ranker, arm: str,
           slots: int) -> float:
    """The target's expected CTR on the logged contexts of ``arm``, from the true model."""
    values = []
    for d in decisions:
        if d.arm != arm or d.candidates is None:
            continue
        _, scores = ranker.scores(d.history or [], d.candidates, "")
        top = np.argsort(-scores, kind="stable")[:slots]
        rows = [int(d.candidates[int(k)][5:]) for k in top]
        values.append(float(sim.world.click_prob(int(d.user_id[5:]), rows).mean()))
    return float(np.mean(values))


def main() -> None:
    ap = parser("bench.ope", __doc__)
    ap.add_argument("--warmup", type=int, default=20_000, help="requests while training")
    ap.add_argument("--requests", type=int, default=30_000, help="requests measured")
    ap.add_argument("--cycle-every", type=int, default=1000)
    ap.add_argument("--epsilon", type=float, default=0.3, help="the control's exploration")
    ap.add_argument("--slots", type=int, default=5, help="positions evaluated, top first")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if args.smoke:
        args.warmup, args.requests, args.cycle_every = 600, 600, 200
    arms = [ArmSettings(name="control", lineage="frozen", share=0.5, policy="epsilon",
                        epsilon=args.epsilon),
            ArmSettings(name="fresh", lineage="incremental", share=0.5)]
    store = MemoryVectorStore()
    source = ListSource([])
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    encoder = TextEncoder()
    trainer = Trainer(arms, TrainingSettings(cycle_interval_s=0, warmup_cycles=3),
                      ItemTable(encoder.dim), SemanticCache(encoder).get, store, seed=args.seed)
    clock = itertools.count(1_700_000_000_000, 20)

    def produce(topic: str, key: bytes, value: bytes) -> None:
        source.messages.append(RawMessage(topic, 0, len(source.messages), key, value))

    sim = Simulator(SimConfig(seed=args.seed, shift_at_request=None), arms,
                    RankService(store, arms, seed=args.seed), produce,
                    clock_ms=lambda: next(clock))
    sim.publish_catalog()
    started = time.perf_counter()
    for n in range(args.warmup):
        sim.step()
        if (n + 1) % args.cycle_every == 0:
            while source.pos < len(source.messages):
                pipeline.step(5000)
            trainer.run_cycle(pipeline, float(n))
    measured_from = len(source.messages)
    for _ in range(args.requests):
        sim.step()
    events = [m.value for m in source.messages[measured_from:]
              if m.topic == "freshrec.events" and m.value is not None]
    decisions, clicks, _ = read_decisions(events)
    fresh = load_target(store, "fresh", None)
    elapsed = time.perf_counter() - started
    print(f"{args.warmup} requests of training, then {args.requests} measured "
          f"(control: frozen, ε-greedy ε={args.epsilon}; fresh: incremental, greedy), "
          f"{elapsed:.0f} s")
    by_depth: dict[str, dict[str, object]] = {}
    inside: dict[str, bool] = {}
    for slots in range(1, args.slots + 1):
        result = evaluate(decisions, clicks, fresh, "greedy", logged_arm="control",
                          slots=slots, seed=args.seed)
        online = _online(decisions, "fresh", slots)
        truth = _truth(sim, decisions, Ranker(fresh), "control", slots)
        print(f"top {slots} slot(s): control's requests {result['decisions']}, effective "
              f"sample size {result['effective_sample_size']:.0f}, largest weight "
              f"{result['max_weight']:.0f}")
        print(f"  fresh, online CTR (measured) {online['value']:.4f} "
              f"[{online['low']:.4f}, {online['high']:.4f}] ({online['requests']} requests); "
              f"truth on control's contexts {truth:.4f}")
        row: dict[str, object] = {"fresh_online": online, "truth": round(truth, 6),
                                  "decisions": result["decisions"],
                                  "effective_sample_size":
                                      round(result["effective_sample_size"], 1),
                                  "max_weight": round(result["max_weight"], 1)}
        for name in ESTIMATORS:
            e = result[name]
            within = e["low"] <= online["value"] <= e["high"]
            covers = e["low"] <= truth <= e["high"]
            if slots == 1:
                inside[name] = within
            row[name] = {**e, "covers_online": within, "covers_truth": covers}
            print(f"  {name:<5} {e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]  "
                  f"covers the online CTR: {within}; covers the truth: {covers}")
        by_depth[str(slots)] = row
    figures = {"by_slots": by_depth, "control_online": _online(decisions, "control", 1),
               "seconds": round(time.perf_counter() - started, 1)}
    targets = {f"top_slot_{k}_covers_online_ctr": target(float(inside[k]), ">=", 1)
               for k in ("ips", "snips", "dr")}
    emit("bench.ope", args, figures, targets)


if __name__ == "__main__":
    main()
