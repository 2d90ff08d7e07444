"""A/A calibration: false-positive rate and power of the experiment statistics.

    python -m bench.aa [--experiments 1000] [--users 4000] [--looks 50] [--lift 0.1]

Each experiment draws users with heterogeneous taste, as real users are: a per-user CTR
from Beta(0.4, 3.6) (mean 0.10; intra-user correlation 1 / (a + b + 1) = 0.2) and a
number of impressions from 1 + Geometric (mean 30); each user arrives at a uniform moment
of the experiment and returns until its end, the impressions spread uniformly over that
stay. Users are assigned to arms by the real salted-hash rule
(:func:`worker.experiments.arms.assign_arm`) and to statistics buckets by the real
:func:`worker.experiments.stats.user_bucket`, and every look goes through the real
statistics code: :func:`compare` and :class:`SequentialTest` (mSPRT) at the impression
level; :func:`ratio_estimate`, :func:`compare_ratio`, :class:`GroupSequentialTest` (alpha
spending over the planned impressions) and :meth:`SequentialTest.update_ratio` at the user
level; with the worker's default settings (1,024 buckets, mSPRT scale 10% of the control's
CTR fixed after 1,000 control impressions).

Prints the false-positive rate at alpha = 0.05 of each test, fixed-horizon (one look at
the end), sequential (``--looks`` looks over the planned horizon, significant if any look
is) and always valid (mSPRT, any horizon: conservative over a finite one by construction),
with its 95% Wilson interval; then the same with a true relative lift (``--lift``) in the
treatment: power. Target: the user-level false-positive rate within [0.03, 0.07], fixed
and sequential.
"""

from __future__ import annotations

import math
import time

import numpy as np

from bench.results import emit, parser, target
from worker.config import ArmSettings, ExperimentSettings
from worker.experiments.arms import assign_arm
from worker.experiments.group_sequential import GroupSequentialTest
from worker.experiments.stats import (
    SequentialTest,
    compare,
    compare_ratio,
    ratio_estimate,
    user_bucket,
)

ALPHA = 0.05
TESTS = ("impression_fixed", "impression_always_valid", "user_fixed", "user_sequential",
         "user_always_valid")


def one_experiment(seed: int, users: int, looks: int, lift: float,
                   exp: ExperimentSettings) -> dict[str, bool]:
    """Simulate one experiment; whether each test called it significant."""
    rng = np.random.default_rng(seed)
    ctr = rng.beta(0.4, 3.6, size=users)
    ids = [f"s{seed}-u{u}" for u in range(users)]
    treated = np.array([assign_arm(u, exp.arms, exp.salt) != exp.control for u in ids])
    bucket = np.array([user_bucket(u, exp.user_buckets) for u in ids])
    if lift:
        ctr = np.where(treated, np.minimum(ctr * (1 + lift), 1.0), ctr)
    n_imps = 1 + rng.geometric(1 / 30, size=users)
    user_of = np.repeat(np.arange(users), n_imps)
    clicked = rng.random(len(user_of)) < ctr[user_of]
    arrival = rng.random(users)  # users join over the experiment and return until its end
    when = arrival[user_of] + rng.random(len(user_of)) * (1 - arrival[user_of])
    look_of = np.minimum((when * looks).astype(np.int64), looks - 1)
    arm_of = treated[user_of].astype(np.int64)
    b = exp.user_buckets
    # counts[look, arm, bucket] of impressions and clicks, cumulative over looks
    cell = (look_of * 2 + arm_of) * b + bucket[user_of]
    imps = np.bincount(cell, minlength=looks * 2 * b).reshape(looks, 2, b).cumsum(0)
    clicks = np.bincount(cell, weights=clicked, minlength=looks * 2 * b
                         ).reshape(looks, 2, b).cumsum(0)
    seq_imp = SequentialTest(exp.sequential_tau, exp.sequential_mde, exp.sequential_burn_in)
    seq_user = SequentialTest(exp.sequential_tau, exp.sequential_mde, exp.sequential_burn_in)
    gst = GroupSequentialTest(ALPHA)
    planned = users * 31  # the expected impressions: the horizon the experiment plans for
    fixed_imp = fixed_user = 1.0
    for k in range(looks):
        ci, ii = int(clicks[k, 0].sum()), int(imps[k, 0].sum())
        ct, it = int(clicks[k, 1].sum()), int(imps[k, 1].sum())
        seq_imp.update(ci, ii, ct, it)
        c_user = ratio_estimate(clicks[k, 0], imps[k, 0])
        t_user = ratio_estimate(clicks[k, 1], imps[k, 1])
        seq_user.update_ratio(c_user, t_user)
        if c_user is not None and t_user is not None:
            ures = compare_ratio(c_user, t_user)
            if ures is not None:
                gst.look(ures.z, (ii + it) / planned)
        if k == looks - 1:
            res = compare(ci, ii, ct, it)
            fixed_imp = 1.0 if res is None else res.p_value
            if c_user is not None and t_user is not None:
                ures = compare_ratio(c_user, t_user)
                fixed_user = 1.0 if ures is None else ures.p_value
    return {"impression_fixed": fixed_imp < ALPHA,
            "impression_always_valid": seq_imp.p_value < ALPHA,
            "user_fixed": fixed_user < ALPHA, "user_sequential": gst.rejected,
            "user_always_valid": seq_user.p_value < ALPHA}


def rates(n: int, users: int, looks: int, lift: float, exp: ExperimentSettings,
          seed0: int) -> dict[str, dict[str, float]]:
    """Share of ``n`` experiments each test called significant, with a Wilson 95% interval."""
    hits = dict.fromkeys(TESTS, 0)
    for e in range(n):
        for test, sig in one_experiment(seed0 + e, users, looks, lift, exp).items():
            hits[test] += int(sig)
    return {t: {"rate": hits[t] / n, **dict(zip(("low", "high"), wilson(hits[t], n),
                                                strict=True))} for t in TESTS}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return mid - half, mid + half


def main() -> None:
    ap = parser("bench.aa", __doc__)
    ap.add_argument("--experiments", type=int, default=1000)
    ap.add_argument("--users", type=int, default=4000, help="users per experiment")
    ap.add_argument("--looks", type=int, default=50, help="looks of the sequential tests")
    ap.add_argument("--lift", type=float, default=0.1, help="true relative lift for power")
    args = ap.parse_args()
    if args.smoke:
        args.experiments, args.users, args.looks = 20, 500, 10
    exp = ExperimentSettings(arms=(ArmSettings(name="control", share=0.5),
                                   ArmSettings(name="fresh", share=0.5)))
    start = time.perf_counter()
    aa = rates(args.experiments, args.users, args.looks, 0.0, exp, 0)
    power = rates(args.experiments, args.users, args.looks, args.lift, exp, 1_000_000)
    seconds = time.perf_counter() - start
    print(f"{args.experiments} experiments x {args.users} users (mean 31 impressions each), "
          f"{args.looks} looks, alpha {ALPHA}; {seconds:.0f} s")
    print(f"{'test':<24}{'A/A false positives':>28}{f'power at +{args.lift:.0%}':>24}")
    for t in TESTS:
        a, p = aa[t], power[t]
        print(f"{t:<24}{a['rate']:>10.3f} [{a['low']:.3f}, {a['high']:.3f}]"
              f"{p['rate']:>14.3f} [{p['low']:.3f}, {p['high']:.3f}]")
    figures = {"experiments": args.experiments, "users": args.users, "looks": args.looks,
               "lift": args.lift, "false_positive_rate": aa, "power": power,
               "seconds": round(seconds, 1)}
    targets = {}
    for t in ("user_fixed", "user_sequential"):
        rate = aa[t]["rate"]
        targets[f"{t}_fpr_min"] = target(rate, ">=", 0.03)
        targets[f"{t}_fpr_max"] = target(rate, "<=", 0.07)
    emit("bench.aa", args, figures, targets)


if __name__ == "__main__":
    main()
