import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from worker.config import ArmSettings
from worker.experiments.arms import assign_arm
from worker.experiments.stats import SequentialTest, chi2_sf, compare, normal_sf, srm_p_value


def test_z_test_matches_the_textbook_and_scipy():
    # 200/1000 vs 250/1000: pooled p = 0.225, SE = sqrt(.225*.775*(2/1000)) = 0.018675
    r = compare(200, 1000, 250, 1000)
    assert r.z == pytest.approx(0.05 / math.sqrt(0.225 * 0.775 * 0.002), rel=1e-9)
    assert r.z == pytest.approx(2.6774, abs=1e-4)
    assert r.p_value == pytest.approx(2 * sps.norm.sf(r.z), rel=1e-9)
    assert r.p_value == pytest.approx(0.00742, abs=1e-5)
    zq = sps.norm.ppf(0.975)
    se = math.sqrt(0.2 * 0.8 / 1000 + 0.25 * 0.75 / 1000)
    assert r.diff_low == pytest.approx(0.05 - zq * se, rel=1e-9)
    assert r.diff_high == pytest.approx(0.05 + zq * se, rel=1e-9)
    assert r.lift == pytest.approx(0.25) and r.lift_low < 0.25 < r.lift_high


def test_distribution_functions_match_scipy():
    for z in (-3.0, -0.5, 0.0, 1.0, 2.5, 6.0):
        assert normal_sf(z) == pytest.approx(sps.norm.sf(z), rel=1e-9)
    for df in (1, 2, 3, 5, 10):
        for x in (0.01, 0.5, 1.0, 3.84, 10.0, 40.0):
            assert chi2_sf(x, df) == pytest.approx(sps.chi2.sf(x, df), rel=1e-7, abs=1e-300)


def test_srm_matches_scipy_chisquare_and_fires_only_on_skew():
    obs = [5100, 4900]
    assert srm_p_value(obs, [0.5, 0.5]) == pytest.approx(sps.chisquare(obs).pvalue, rel=1e-9)
    assert srm_p_value([5000, 5050], [0.5, 0.5]) > 0.001
    assert srm_p_value([5000, 5600], [0.5, 0.5]) < 0.001
    assert srm_p_value([3000, 7000], [0.3, 0.7]) > 0.001


def test_sequential_test_controls_false_positives_under_peeking():
    # A/A: 300 seeded experiments, 40 peeks each; count those that EVER dip below alpha.
    alpha, rng = 0.05, np.random.default_rng(11)
    ever, naive_ever = 0, 0
    for _ in range(300):
        seq = SequentialTest(tau=0.02)
        clicks = np.zeros(2, int)
        imps = np.zeros(2, int)
        hit = naive = False
        for _ in range(40):
            imps += 500
            clicks += rng.binomial(500, 0.1, size=2)
            if seq.update(clicks[0], imps[0], clicks[1], imps[1]) < alpha:
                hit = True
            if compare(clicks[0], imps[0], clicks[1], imps[1]).p_value < alpha:
                naive = True
        ever += hit
        naive_ever += naive
    assert ever / 300 <= alpha
    assert naive_ever / 300 > 2 * alpha  # peeking at the fixed-horizon test does inflate


def test_sequential_test_detects_a_real_difference():
    rng = np.random.default_rng(2)
    seq = SequentialTest(tau=0.02)
    clicks, imps = np.zeros(2, int), np.zeros(2, int)
    for _ in range(60):
        imps += 500
        clicks += rng.binomial(500, [0.10, 0.12])
        seq.update(clicks[0], imps[0], clicks[1], imps[1])
    assert seq.p_value < 0.01


def test_assignment_is_stable_and_matches_shares():
    arms = [ArmSettings(name="a", share=0.2), ArmSettings(name="b", share=0.8)]
    got = [assign_arm(f"user-{k}", arms) for k in range(20_000)]
    assert got == [assign_arm(f"user-{k}", arms) for k in range(20_000)]
    share_a = got.count("a") / len(got)
    assert abs(share_a - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20_000)
    assert srm_p_value([got.count("a"), got.count("b")], [0.2, 0.8]) > 0.001
    other_salt = [assign_arm(f"user-{k}", arms, salt="x") for k in range(200)]
    assert other_salt != got[:200]
    random.seed(0)


def _peeking_runs(ctrs, runs, seed, make_test, looks=40, per_look=5000):
    """Share of seeded experiments whose sequential p ever drops below 0.05."""
    rng, hits = np.random.default_rng(seed), 0
    for _ in range(runs):
        seq = make_test()
        clicks, imps = np.zeros(2, int), np.zeros(2, int)
        for _ in range(looks):
            imps += per_look
            clicks += rng.binomial(per_look, ctrs)
            seq.update(clicks[0], imps[0], clicks[1], imps[1])
        hits += seq.p_value < 0.05
    return hits / runs


def test_relative_mixing_scale_has_power_at_obd_like_ctrs_and_keeps_alpha():
    # Open Bandit Dataset CTRs are ~0.5%: a 10% lift is 0.0005 absolute, 400k per arm.
    lift = [0.005, 0.0055]
    relative = _peeking_runs(lift, 60, 3, SequentialTest, per_look=10_000)
    absolute = _peeking_runs(lift, 60, 3, lambda: SequentialTest(tau=0.02), per_look=10_000)
    print(f"power at CTR 0.5%, +10%, 400k/arm: relative tau {relative:.2f}, "
          f"absolute 0.02 {absolute:.2f}")
    assert relative >= 0.5 and relative >= 2 * absolute
    # and A/A with 40 peeks stays within alpha
    assert _peeking_runs([0.005, 0.005], 200, 4, SequentialTest) <= 0.05


def test_relative_tau_is_fixed_once_from_the_control_after_burn_in():
    seq = SequentialTest(mde=0.1, burn_in=1000)
    assert seq.update(3, 900, 9, 900) == 1.0 and seq.tau is None  # still burning in
    seq.update(10, 1000, 12, 1000)
    assert seq.tau == pytest.approx(0.1 * 10 / 1000)
    seq.update(500, 10_000, 400, 10_000)
    assert seq.tau == pytest.approx(0.001)  # not re-estimated
