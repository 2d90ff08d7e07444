"""Experiment statistics from per-arm counts: the one place they are computed.

The worker's monitor, ``freshrec status`` (from the Redis counters every worker adds to)
and the demo all call :func:`summarize`, so the numbers a dashboard, a terminal and
the docs show are the same computation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from worker.config import ExperimentSettings
from worker.experiments.stats import (
    RatioEstimate,
    compare,
    compare_ratio,
    ratio_estimate,
    srm_p_value,
)

__all__ = ["Counts", "bucket_counts", "summarize", "user_ratio"]

#: arm -> event type ("impression", "click", "purchase", "request", and per user bucket
#: "impression@17", "click@17", ...) -> count
Counts = Mapping[str, Mapping[str, int]]


def bucket_counts(counts: Mapping[str, int], etype: str, buckets: int) -> np.ndarray:
    """One arm's per-bucket counts of ``etype`` as an array of ``buckets`` entries."""
    out = np.zeros(buckets, dtype=np.float64)
    prefix = etype + "@"
    for key, n in counts.items():
        if key.startswith(prefix):
            b = int(key[len(prefix):])
            if 0 <= b < buckets:
                out[b] += n
    return out


def user_ratio(counts: Mapping[str, int], numerator: str, buckets: int,
               denominator: str = "impression") -> RatioEstimate | None:
    """User-level ratio (e.g. clicks per impression) of one arm, from its bucket counts."""
    if buckets < 2:
        return None
    return ratio_estimate(bucket_counts(counts, numerator, buckets),
                          bucket_counts(counts, denominator, buckets))


def summarize(exp: ExperimentSettings, totals: Counts, *, window: Counts | None = None,
              sequential_p: Mapping[str, float] | None = None,
              user_sequential_p: Mapping[str, float] | None = None,
              shares: Mapping[str, float] | None = None,
              group_sequential: Mapping[str, Mapping[str, Any]] | None = None
              ) -> dict[str, Any]:
    """CTR per arm, lift with 95% intervals and p-values against control, and SRM.

    Impression-level figures are at the top of each arm's entry (labelled so in the
    docs); the user-level ones, which are the ones to decide on, under ``"user"``.

    Args:
        exp: the experiment (arms, control, SRM threshold, user buckets).
        totals: cumulative counts per arm.
        window: counts over the recent window, for ``ctr_window`` (None: not reported).
        sequential_p: always-valid impression-level p-value per treatment arm.
        user_sequential_p: always-valid user-level p-value per treatment arm.
        group_sequential: the user-level group-sequential test's state per treatment arm.
        shares: the arms' current traffic shares for the SRM check (None: configured).

    Pure: reads its arguments only, so calling it twice gives the same answer.
    """
    control = totals.get(exp.control, {})
    c_clicks, c_imps = control.get("click", 0), control.get("impression", 0)
    b = exp.user_buckets
    c_user = user_ratio(control, "click", b)
    c_purchase = user_ratio(control, "purchase", b)
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
        t_user = user_ratio(t, "click", b)
        user: dict[str, Any] = {} if t_user is None else {
            "ctr": t_user.ratio, "se": t_user.var ** 0.5, "units": t_user.units}
        if arm.name != exp.control:
            if sequential_p is not None and arm.name in sequential_p:
                entry["sequential_p"] = sequential_p[arm.name]
            if user_sequential_p is not None and arm.name in user_sequential_p:
                user["sequential_p"] = user_sequential_p[arm.name]
            if group_sequential is not None and arm.name in group_sequential:
                user["group_sequential"] = dict(group_sequential[arm.name])
            res = compare(c_clicks, c_imps, clicks, imps)
            if res is not None:
                entry.update(_lift_fields(res))
            if c_user is not None and t_user is not None:
                ures = compare_ratio(c_user, t_user)
                if ures is not None:
                    user.update(_lift_fields(ures))
            t_purchase = user_ratio(t, "purchase", b)
            if c_purchase is not None and t_purchase is not None:
                pres = compare_ratio(c_purchase, t_purchase)
                if pres is not None:
                    user.update(purchase_diff=pres.diff, purchase_diff_low=pres.diff_low,
                                purchase_diff_high=pres.diff_high,
                                purchase_p_value=pres.p_value)
        if user:
            entry["user"] = user
        arms[arm.name] = entry
    requests = [totals.get(a.name, {}).get("request", 0) for a in exp.arms]
    expected = [a.share if shares is None else shares.get(a.name, 0.0) for a in exp.arms]
    live = [(r, s) for r, s in zip(requests, expected, strict=True) if s > 0]
    srm = srm_p_value([r for r, _ in live], [s for _, s in live])
    return {"experiment": exp.name, "control": exp.control, "arms": arms,
            "srm_p_value": srm, "srm_alert": srm < exp.srm_p_value}


def _lift_fields(res: Any) -> dict[str, float]:
    return {"lift": res.lift, "lift_low": res.lift_low, "lift_high": res.lift_high,
            "diff": res.diff, "diff_low": res.diff_low, "diff_high": res.diff_high,
            "z": res.z, "p_value": res.p_value}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None
