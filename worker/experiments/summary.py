"""Experiment statistics from per-arm counts: the one place they are computed.

The worker's monitor, ``freshrec status`` (from the Redis counters every worker adds to)
and the demo all call :func:`summarize`, so the numbers a dashboard, a terminal and
the docs show are the same computation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.config import ExperimentSettings
from worker.experiments.stats import compare, srm_p_value

__all__ = ["Counts", "summarize"]

#: arm -> event type ("impression", "click", "purchase", "request") -> count
Counts = Mapping[str, Mapping[str, int]]


def summarize(exp: ExperimentSettings, totals: Counts, *, window: Counts | None = None,
              sequential_p: Mapping[str, float] | None = None) -> dict[str, Any]:
    """CTR per arm, lift with 95% intervals and p-values against control, and SRM.

    Args:
        exp: the experiment (arms, control, SRM threshold).
        totals: cumulative counts per arm.
        window: counts over the recent window, for ``ctr_window`` (None: not reported).
        sequential_p: always-valid p-value per treatment arm (None: not reported).

    Pure: reads its arguments only, so calling it twice gives the same answer.
    """
    control = totals.get(exp.control, {})
    c_clicks, c_imps = control.get("click", 0), control.get("impression", 0)
    arms: dict[str, Any] = {}
    for arm in exp.arms:
        t = totals.get(arm.name, {})
        clicks, imps = t.get("click", 0), t.get("impression", 0)
        entry: dict[str, Any] = {
            "impressions": imps, "clicks": clicks, "purchases": t.get("purchase", 0),
            "requests": t.get("request", 0), "ctr": _ratio(clicks, imps),
        }
        if window is not None:
            w = window.get(arm.name, {})
            entry["ctr_window"] = _ratio(w.get("click", 0), w.get("impression", 0))
        if arm.name != exp.control:
            if sequential_p is not None and arm.name in sequential_p:
                entry["sequential_p"] = sequential_p[arm.name]
            res = compare(c_clicks, c_imps, clicks, imps)
            if res is not None:
                entry.update(lift=res.lift, lift_low=res.lift_low, lift_high=res.lift_high,
                             diff=res.diff, diff_low=res.diff_low, diff_high=res.diff_high,
                             z=res.z, p_value=res.p_value)
        arms[arm.name] = entry
    requests = [totals.get(a.name, {}).get("request", 0) for a in exp.arms]
    srm = srm_p_value(requests, [a.share for a in exp.arms])
    return {"experiment": exp.name, "control": exp.control, "arms": arms,
            "srm_p_value": srm, "srm_alert": srm < exp.srm_p_value}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None
