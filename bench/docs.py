"""Generate ``docs/benchmarks.md`` from the stored results in ``bench/results/``.

    python -m bench.docs            # write docs/benchmarks.md
    python -m bench.docs --check    # exit 1 if the page differs from what the results give

Every figure on the page comes from a bench's JSON result (see :mod:`bench.results`),
printed with the command, the machine and the code revision that produced it, so the page
cannot drift from its commands. The test suite runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.results import RESULTS, ROOT

PAGE = ROOT / "docs" / "benchmarks.md"

#: bench name -> (title, what it measures and against what). Every bench has an entry.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "ingest": ("Ingestion throughput", "Events/s of freshrec's parse, validate, dedupe, join "
               "and buffer path against a raw kafka-python consumer decoding the same "
               "backlog (msgspec and json), same broker, same run. Target: ratio >= 0.8."),
    "ingest_tier": ("Ingest tier scale-out", "Events/s of one `run --role ingest` process "
                    "against two in one consumer group, same backlog. Target: ratio >= 1.5 "
                    "(2 cores shared with the broker)."),
    "sustained": ("Sustained rate", "The full worker (training overlapped, gate, publish, "
                  "checkpoints) against its own ingestion alone, on one backlog. Target: "
                  "ratio >= 0.5."),
    "freshness": ("Freshness", "Seconds from a click produced to Kafka to a published "
                  "version that learnt from it, under background traffic. Target: p99 <= "
                  "2.4 s at 100k items and 1,000 requests/s (a GPU machine's figure)."),
    "gate_churn": ("Gate churn", "How often the gate rejects the incremental candidate on "
                   "traffic of many rare items, and a cycle's seconds, in process."),
    "train_publish": ("Training and publish", "Training samples/s, and publish vectors/s "
                      "(versioned write + atomic flip) against a raw Redis MSET. Target: "
                      "publish/MSET >= 0.7."),
    "train_input": ("Training input path", "Samples/s end to end by input path (objects, "
                    "columns, step only), on CPU or CUDA. GPU target: >= 1M samples/s at "
                    "batch 16,384."),
    "encode": ("Text encoding", "Item texts encoded per second: a naive per-chunk loop "
               "against the length-sorted one, same model and texts."),
    "scale": ("Scale: publish and checkpoint cost", "Full against delta publishes and "
              "checkpoints at two catalog sizes: per-cycle cost should be flat in catalog "
              "size."),
    "memory": ("Memory under all-distinct ids", "Peak RSS of a worker at the default "
               "settings (caps derived from `ingest.memory_budget_bytes`) and of one without "
               "a budget, over all-distinct users, items and requests, with what each cap "
               "evicted. Target: the defaults' peak within the budget."),
    "serve": ("Serving latency", "`freshrec serve` lookups and ranks with ids drawn per "
              "request from Zipf(1.1) and uniform popularity, cache on and off, beside raw "
              "Redis reads. Targets on the Zipf workload: lookup p99 <= 2 ms, rank p99 <= "
              "5 ms."),
    "soak": ("Fault-injection soak", "Hostile messages, `kill -9`s (one right after an "
             "outage ends), a Redis outage, slow Redis, a Redis failover, a full checkpoint "
             "disk, a frozen broker and a broker restart against a real worker; counters, "
             "dead letters (one per bad message) and labels checked against ground truth."),
    "quiet": ("Stationary run", "The demo without a shift beside a real Prometheus with the "
              "rules: no drift alert, no alert firing."),
    "realdata": ("Ranking quality on real data", "MovieLens-100k replayed in time order "
                 "through freshrec's learning path, test-then-train: hit@10, NDCG@10 and MRR "
                 "of the incremental and frozen arms against the peers the run names "
                 "(`--peers`: popularity, decayed popularity, item-to-item transitions, "
                 "River MF, implicit ALS, a SASRec-style model), in the same run. Target: "
                 "the incremental arm >= 1.25x the best peer's hit@10."),
    "demo": ("The recorded demo run", "`freshrec demo` end to end at its defaults: the lift "
             "of the incremental arm over the frozen control, both p-values, and when each "
             "drift alert first rose against the preference shift. Its history and chart "
             "are `docs/demo-history.jsonl` and `docs/freshrec-report.png`."),
    "quality": ("Quality on the simulator", "Progressive AUC and CTR of the incremental "
                "lineage against a frozen copy, around a preference shift."),
    "aa": ("A/A calibration of the experiment statistics", "Hundreds of simulated A/A "
           "experiments with heterogeneous users through the real statistics code: the "
           "false-positive rate at alpha 0.05 of the impression-level and the user-level "
           "tests, fixed-horizon, group-sequential and always valid; then power at a true "
           "lift. Target: user-level rates within [0.03, 0.07]. See docs/experiments.md."),
    "ope": ("Off-policy evaluation on a closed loop", "The fresh arm's CTR estimated by "
            "`freshrec ope`'s code (IPS, SNIPS, DR, direct method) from the exploring "
            "control arm's logs alone, against the fresh arm's measured online CTR over "
            "the same period and the simulator's truth, per slate depth with the effective "
            "sample size. Target: the top slot's intervals cover the online CTR."),
}

#: Figures owed to a machine with a GPU: the commands, ready to run there.
GPU_COMMANDS = (
    "python -m bench.freshness --items 100000 --rate 1000 --open-loop --cycle-interval-s 1.0",
    "python -m bench.train_input --device cuda --items 1000000 --samples 200000 "
    "--batch 512 16384 --steps 40",
    "python -m bench.encode --device cuda --texts 20000",
)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, shown value) rows of a nested figures object."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list):
        if len(value) > 12:
            head = ", ".join(shown(v) for v in value[:12])
            return [(prefix, f"[{head}, … ({len(value)} in all)]")]
        if all(isinstance(v, dict) for v in value) and value:
            rows = []
            for i, v in enumerate(value):
                rows += flatten(v, f"{prefix}[{i}]")
            return rows
        return [(prefix, "[" + ", ".join(shown(v) for v in value) + "]")]
    return [(prefix, shown(value))]


def shown(value: Any) -> str:
    """A figure as text: floats to 4 significant digits, thousands separated."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def machine_line(m: dict[str, Any]) -> str:
    """The machine in one line."""
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    mem = f", {m['memory_gb']} GiB" if m.get("memory_gb") else ""
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())
    return f"{m['cpu']}, {m['cores']} cores{mem}{gpu}; Python {m['python']}; {libs}"


def section(name: str, result: dict[str, Any] | None) -> str:
    """One bench's section of the page."""
    title, what = DESCRIPTIONS[name]
    lines = [f"## {title}", "", what, ""]
    if result is None:
        lines += [f"No stored result: run `python -m bench.{name}` to produce one.", ""]
        return "\n".join(lines)
    lines += [f"- **Command:** `{result['command']}`",
              f"- **Machine:** {machine_line(result['machine'])}",
              f"- **Code revision:** `{result['revision']}`, finished "
              f"{result['finished_at']}", ""]
    if result["targets"]:
        lines += ["| target | measured | wanted | met |", "|---|---|---|---|"]
        for key, t in result["targets"].items():
            lines.append(f"| {key} | {shown(t['value'])} | {t['target']} | "
                         f"{'yes' if t['met'] else '**no**'} |")
        lines.append("")
    lines += ["| figure | value |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in flatten(result["figures"])]
    lines.append("")
    return "\n".join(lines)


def render(results_dir: Path = RESULTS) -> str:
    """The whole page from the stored results."""
    results = {}
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        results[data["bench"]] = data
    out = [
        "# Benchmarks", "",
        "<!-- Generated by `python -m bench.docs` from bench/results/*.json; do not edit. -->",
        "",
        "Each section is one bench's stored result: the command that ran, the machine it ran "
        "on and the code revision. Re-run a bench with its command to refresh its section "
        "(`python -m bench.<name>` writes `bench/results/<name>.json`), then `python -m "
        "bench.docs`. Every bench also has a `--smoke` size that the test suite runs.",
        "",
    ]
    for name in DESCRIPTIONS:
        out.append(section(name, results.get(name)))
    out += ["## Figures that need a GPU machine", "",
            "These targets are judged on a GPU machine; the commands are ready to run there "
            "(each writes its result like any other bench):", ""]
    out += [f"- `{cmd}`" for cmd in GPU_COMMANDS]
    out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.docs",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if docs/benchmarks.md differs from the stored results")
    args = ap.parse_args()
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print("docs/benchmarks.md is stale: run python -m bench.docs", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
