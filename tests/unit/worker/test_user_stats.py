"""User-level experiment statistics: delta-method ratios, bucketing, alpha spending."""

import math
from collections import Counter

import numpy as np
import pytest

from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.pipeline import BatchReport, IngestPipeline
from worker.config import ExperimentSettings
from worker.experiments.group_sequential import GroupSequentialTest, obrien_fleming_spent
from worker.experiments.monitor import ExperimentMonitor
from worker.experiments.stats import compare, compare_ratio, ratio_estimate, user_bucket
from worker.experiments.summary import bucket_counts
from worker.tools.synthetic import ListSource, encode, traffic


def test_ratio_estimate_is_the_delta_method_of_per_user_sums():
    clicks = np.array([0, 3, 1, 7, 0, 2])
    imps = np.array([4, 10, 2, 20, 1, 6])
    est = ratio_estimate(clicks, imps)
    r = clicks.sum() / imps.sum()
    n, ybar = len(imps), imps.mean()
    # textbook: Var(R) = (s_x^2 - 2 R s_xy + R^2 s_y^2) / (n ybar^2)
    sx, sy = np.var(clicks, ddof=1), np.var(imps, ddof=1)
    sxy = np.cov(clicks, imps, ddof=1)[0, 1]
    assert est is not None and est.ratio == pytest.approx(r)
    assert est.var == pytest.approx((sx - 2 * r * sxy + r * r * sy) / (n * ybar**2))
    assert ratio_estimate([1, 0], [0, 0]) is None


def _clustered_z(rng: np.random.Generator, users: int = 600) -> tuple[float, float]:
    """One A/A comparison of users with heterogeneous CTRs: (impression z, user z)."""
    ctr = rng.beta(0.4, 3.6, size=users)
    n = 1 + rng.geometric(1 / 30, size=users)
    clicks = rng.binomial(n, ctr)
    arm = rng.random(users) < 0.5
    imp = compare(int(clicks[~arm].sum()), int(n[~arm].sum()),
                  int(clicks[arm].sum()), int(n[arm].sum()))
    c, t = ratio_estimate(clicks[~arm], n[~arm]), ratio_estimate(clicks[arm], n[arm])
    assert imp is not None and c is not None and t is not None
    user = compare_ratio(c, t)
    assert user is not None
    return imp.z, user.z


def test_user_level_z_is_calibrated_where_the_impression_level_one_is_not():
    rng = np.random.default_rng(3)
    zs = np.array([_clustered_z(rng) for _ in range(300)])
    assert 0.85 < zs[:, 1].std() < 1.15  # a standard normal under A/A
    assert zs[:, 0].std() > 2.0  # impressions of one user are not independent


def test_bucketed_units_keep_the_variance_of_per_user_units():
    rng = np.random.default_rng(5)
    users = 5000
    ctr = rng.beta(0.4, 3.6, size=users)
    n = 1 + rng.geometric(1 / 30, size=users)
    clicks = rng.binomial(n, ctr)
    per_user = ratio_estimate(clicks, n)
    bucket = np.array([user_bucket(f"u{u}", 1024) for u in range(users)])
    bucketed = ratio_estimate(np.bincount(bucket, clicks, 1024), np.bincount(bucket, n, 1024))
    assert per_user is not None and bucketed is not None
    assert bucketed.ratio == pytest.approx(per_user.ratio)
    assert bucketed.var == pytest.approx(per_user.var, rel=0.15)


def test_pipeline_counts_events_per_user_bucket_and_the_monitor_reports_user_level():
    events = [RawMessage("freshrec.events", 0, i, None, encode(e)) for i, e in enumerate(
        traffic(400, seed=1, users=80, arms=("control", "fresh")))]
    pipe = IngestPipeline(ListSource(events), MemoryDeadLetters(), user_buckets=64)
    mon = ExperimentMonitor(ExperimentSettings(user_buckets=64))
    total: Counter[tuple[str, str]] = Counter()
    while True:
        rep = pipe.step(max_records=100)
        if not rep.messages:
            break
        total.update(rep.arm_events)
        mon.record(rep)
    for arm in ("control", "fresh"):
        per_bucket = {e: n for (a, e), n in total.items() if a == arm}
        assert bucket_counts(per_bucket, "impression", 64).sum() == total[(arm, "impression")]
        assert bucket_counts(per_bucket, "click", 64).sum() == total[(arm, "click")]
    mon.update()
    fresh = mon.snapshot()["arms"]["fresh"]
    assert fresh["user"]["ctr"] == pytest.approx(fresh["ctr"])
    assert 0 <= fresh["user"]["p_value"] <= 1 and "sequential_p" in fresh["user"]


def test_obrien_fleming_boundaries_spend_what_the_spending_function_allows():
    from scipy import stats as sps
    gst = GroupSequentialTest(0.05)
    bounds = []
    for k in range(1, 6):
        gst.look(0.0, k / 5)
        bounds.append(gst.z_bound)
    # the first look spends f(0.2) = 2 - 2 Phi(1.96 / sqrt(0.2)) on its own
    spent = obrien_fleming_spent(0.2, 0.05)
    assert spent == pytest.approx(2 * sps.norm.sf(sps.norm.ppf(0.975) / math.sqrt(0.2)))
    assert bounds[0] == pytest.approx(sps.norm.isf(spent / 2), abs=0.02)  # grid step 0.01
    assert all(a > b for a, b in zip(bounds, bounds[1:], strict=False))  # O'Brien-Fleming shape
    assert 2.0 < bounds[-1] < 2.1 and obrien_fleming_spent(1.0, 0.05) == pytest.approx(0.05)


def test_group_sequential_spends_alpha_under_continuous_monitoring_and_survives_restore():
    rng = np.random.default_rng(11)
    looks, reps, hits = 40, 1500, 0
    ts = np.arange(1, looks + 1) / looks
    for _ in range(reps):
        b = np.cumsum(rng.normal(size=looks) * math.sqrt(1 / looks))
        gst = GroupSequentialTest(0.05)
        hits += any(gst.look(float(bb / math.sqrt(t)), float(t))
                    for bb, t in zip(b, ts, strict=True))
    assert 0.035 < hits / reps < 0.065
    gst = GroupSequentialTest(0.05)
    for t in (0.2, 0.5):
        gst.look(0.5, t)
    again = GroupSequentialTest(0.05)
    again.load(gst.state())
    assert again.z_bound == pytest.approx(gst.z_bound) and again.t == 0.5
    assert again.look(0.0, 0.8) is False and again.look(9.0, 0.9) is True


def test_monitor_state_keeps_the_user_level_tests():
    exp = ExperimentSettings(user_buckets=8, planned_impressions=1000, sequential_burn_in=10)
    mon = ExperimentMonitor(exp)
    rep = BatchReport()
    for b in range(8):
        rep.arm_events[("control", f"impression@{b}")] = 20
        rep.arm_events[("control", f"click@{b}")] = 2 + b % 2
        rep.arm_events[("fresh", f"impression@{b}")] = 20
        rep.arm_events[("fresh", f"click@{b}")] = 8 + b % 3
    rep.arm_events.update({("control", "impression"): 160, ("control", "click"): 20,
                           ("fresh", "impression"): 160, ("fresh", "click"): 72})
    mon.record(rep)
    mon.update()
    user = mon.snapshot()["arms"]["fresh"]["user"]
    assert user["group_sequential"]["significant"] and user["sequential_p"] < 0.05
    again = ExperimentMonitor(exp)
    again.load(mon.state())
    assert again.snapshot()["arms"]["fresh"]["user"] == user
