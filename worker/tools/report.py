"""``freshrec report``: PNG charts of a run for people who would rather look than read.

Reads the JSON lines that ``freshrec demo --history-out`` writes (one status snapshot per
view tick) and draws CTR per arm over time with 95% intervals, the lift against control
with its interval, drift scores with alert marks, and progressive AUC per arm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["headline", "write_report"]


def _load(path: str | Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no snapshots in the history file")
    return rows


def headline(last: dict[str, Any]) -> str:
    """The run's result in one line: each arm's final lift, interval and p-values.

    >>> headline({"arms": {"control": {}, "fresh": {"lift": 0.12, "lift_low": 0.05,
    ...   "lift_high": 0.19, "p_value": 1e-6, "sequential_p": 2e-4}}})
    'fresh: lift +12.0% [+5.0%, +19.0%], p=1e-06, sequential p=0.0002'
    """
    parts = []
    for name, arm in last["arms"].items():
        if None in (arm.get("lift"), arm.get("lift_low"), arm.get("lift_high")):
            continue
        parts.append(f"{name}: lift {arm['lift']:+.1%} [{arm['lift_low']:+.1%}, "
                     f"{arm['lift_high']:+.1%}], p={_p(arm.get('p_value'))}, "
                     f"sequential p={_p(arm.get('sequential_p'))}")
    return "; ".join(parts) or "no treatment statistics"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def write_report(history: str | Path, out_dir: str | Path) -> list[Path]:
    """Render the charts into ``out_dir``; returns the PNG paths."""
    import matplotlib  # noqa: PLC0415 - optional 'report' extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = _load(history)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = [r["t_s"] for r in rows]
    arms = list(rows[-1]["arms"])
    shift_t = next((r["t_s"] for r in rows if r.get("shifted")), None)
    fig, axes = plt.subplots(4, 1, figsize=(10, 13), sharex=True)
    ax = axes[0]
    for arm in arms:
        ctr = [r["arms"][arm].get("ctr_window") for r in rows]
        imps = [r["arms"][arm].get("impressions") or 0 for r in rows]
        x = [tt for tt, c in zip(t, ctr, strict=True) if c is not None]
        y = [c for c in ctr if c is not None]
        n = [max(i, 1) for i, c in zip(imps, ctr, strict=True) if c is not None]
        half = [1.96 * math.sqrt(c * (1 - c) / k) for c, k in zip(y, n, strict=True)]
        ax.plot(x, y, label=f"{arm} CTR (window)")
        ax.fill_between(x, [a - b for a, b in zip(y, half, strict=True)],
                        [a + b for a, b in zip(y, half, strict=True)], alpha=0.2)
    ax.set_ylabel("CTR")
    ax.set_title("CTR per arm (windowed; band = 95% interval on the cumulative count)")
    ax = axes[1]
    for arm in arms:
        lift = [r["arms"][arm].get("lift") for r in rows]
        if all(v is None for v in lift):
            continue
        lo = [r["arms"][arm].get("lift_low") for r in rows]
        hi = [r["arms"][arm].get("lift_high") for r in rows]
        keep = [i for i, v in enumerate(lift) if v is not None and lo[i] is not None]
        ax.plot([t[i] for i in keep], [lift[i] for i in keep], label=f"{arm} lift vs control")
        ax.fill_between([t[i] for i in keep], [lo[i] for i in keep], [hi[i] for i in keep],
                        alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("relative lift")
    ax.set_title("Cumulative CTR lift against control, 95% interval")
    ax = axes[2]
    signals = sorted({k for r in rows for k in r.get("drift_scores", {})})
    for sig in signals:
        ax.plot(t, [r.get("drift_scores", {}).get(sig, float("nan")) for r in rows], label=sig)
    thresholds = rows[-1].get("drift_thresholds", {})
    for k, (sig, value) in enumerate(sorted(thresholds.items())):
        ax.axhline(value, color=f"C{k}", ls=":", lw=1, label=f"{sig} threshold {value:g}")
    for sig in sorted({k for r in rows for k in r.get("drift", {})}):
        marks = [tt for tt, r in zip(t, rows, strict=True) if r.get("drift", {}).get(sig)]
        if marks:
            ax.scatter(marks, [0] * len(marks), marker="|", s=200, label=f"{sig} alert")
    ax.set_ylabel("score")
    ax.set_title("Drift scores (marks at 0: alert raised)")
    ax = axes[3]
    for arm in arms:
        auc = [r["arms"][arm].get("auc") for r in rows]
        ax.plot([tt for tt, a in zip(t, auc, strict=True) if a is not None],
                [a for a in auc if a is not None], label=f"{arm} progressive AUC")
    ax.set_ylabel("AUC")
    ax.set_xlabel("seconds since start")
    ax.set_title("Progressive validation AUC (served model on samples it never trained on)")
    for ax in axes:
        if shift_t is not None:
            ax.axvline(shift_t, color="red", ls="--", lw=1, label="preference shift")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(headline(rows[-1]), fontsize=10)
    fig.tight_layout()
    path = out / "freshrec-report.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]
