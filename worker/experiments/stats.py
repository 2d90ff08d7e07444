"""Experiment statistics: z-tests, lift intervals, mSPRT, sample-ratio mismatch.

Two units of analysis. *Impression level* treats every impression as an independent
Bernoulli trial (:func:`compare`, :func:`msprt_p_value`): cheap, and wrong whenever one user
sees many impressions, because a user's impressions share a taste and are correlated, so
the variance is underestimated and p-values come out too small. *User level* treats CTR as
a ratio of per-unit sums, clicks over impressions, with a delta-method variance (Deng et
al. 2018, "Applying the Delta Method in Metric Analytics"): the unit is a hash bucket of
users (:func:`user_bucket`), so the state is a fixed number of integer counters per arm
whatever the number of users, and the counters add across processes and restarts exactly
like the per-arm totals. Users in different buckets are independent, so a bucket is a valid
(coarser) unit; with ``B`` buckets the variance estimate has ``B - 1`` degrees of freedom
(relative standard error about ``sqrt(2 / B)``, 4.4% at the default 1,024).

Pure functions of counts (plus :class:`SequentialTest`, which keeps the running minimum that
makes its p-value always valid). No scipy at run time: the few distribution functions
needed are written here and checked against scipy in the tests.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LiftResult", "RatioEstimate", "SequentialTest", "chi2_sf", "compare",
           "compare_ratio", "msprt", "msprt_p_value", "normal_sf", "ratio_estimate",
           "srm_p_value", "user_bucket"]


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class LiftResult:
    """Treatment vs control: CTRs, absolute and relative lift with a confidence interval."""

    ctr_control: float
    ctr_treatment: float
    diff: float
    diff_low: float
    diff_high: float
    lift: float  # relative: diff / ctr_control
    lift_low: float
    lift_high: float
    z: float
    p_value: float  # two-sided, pooled two-proportion z-test


def compare(clicks_c: int, imps_c: int, clicks_t: int, imps_t: int,
            confidence: float = 0.95) -> LiftResult | None:
    """Two-proportion z-test (pooled SE) and a Wald interval on the difference (unpooled SE).

    The relative-lift interval uses the delta method on log(p_t / p_c). None when either
    arm has no impressions or the pooled CTR is 0 or 1.
    """
    if imps_c <= 0 or imps_t <= 0:
        return None
    pc, pt = clicks_c / imps_c, clicks_t / imps_t
    pooled = (clicks_c + clicks_t) / (imps_c + imps_t)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / imps_c + 1 / imps_t))
    if se_pooled == 0:
        return None
    z = (pt - pc) / se_pooled
    p = 2 * normal_sf(abs(z))
    zq = _normal_quantile(0.5 + confidence / 2)
    se = math.sqrt(pc * (1 - pc) / imps_c + pt * (1 - pt) / imps_t)
    diff = pt - pc
    if pc > 0 and pt > 0:
        se_log = math.sqrt((1 - pc) / (pc * imps_c) + (1 - pt) / (pt * imps_t))
        log_ratio = math.log(pt / pc)
        lift_low = math.exp(log_ratio - zq * se_log) - 1
        lift_high = math.exp(log_ratio + zq * se_log) - 1
        lift = pt / pc - 1
    else:
        lift = lift_low = lift_high = float("nan")
    return LiftResult(pc, pt, diff, diff - zq * se, diff + zq * se, lift, lift_low, lift_high,
                      z, p)


def user_bucket(user_id: str, buckets: int) -> int:
    """The user's statistics bucket, as the ingest pipeline computes it for every event.

    CRC-32 of the id: the same in every process, independent of the arm assignment (a
    different hash), so each arm's buckets are random clusters of its users, and cheap
    enough to run once per event.

    >>> user_bucket("user-42", 1024) == user_bucket("user-42", 1024)
    True
    """
    return zlib.crc32(user_id.encode()) % buckets


@dataclass(frozen=True)
class RatioEstimate:
    """A ratio of per-unit sums (e.g. clicks / impressions) and its delta-method variance."""

    ratio: float
    var: float  # variance of ``ratio``
    units: int  # units with a non-zero denominator
    numerator: int
    denominator: int


def ratio_estimate(num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray
                   ) -> RatioEstimate | None:
    """``sum(num) / sum(den)`` over units, with ``Var = sum((x - R y)^2) / (n (n-1) ybar^2)``.

    Every unit counts in ``n``, including ones with nothing yet (a bucket with no user so
    far is still a draw of the unit's distribution). None when the denominator is 0 or
    there are fewer than two units with data.
    """
    x = np.asarray(num, dtype=np.float64)
    y = np.asarray(den, dtype=np.float64)
    total_y = float(y.sum())
    n = len(y)
    active = int(np.count_nonzero(y))
    if total_y <= 0 or n < 2 or active < 2:
        return None
    r = float(x.sum()) / total_y
    resid = x - r * y
    var = float(resid @ resid) * n / ((n - 1) * total_y * total_y)
    return RatioEstimate(r, var, active, int(x.sum()), int(total_y))


def compare_ratio(control: RatioEstimate, treatment: RatioEstimate,
                  confidence: float = 0.95) -> LiftResult | None:
    """Treatment vs control on ratio metrics: Wald z on the difference, delta-method lift.

    The difference's variance is the sum of the arms' (they hold disjoint users). The
    relative lift's interval is on ``log(R_t / R_c)`` with ``Var(log R) = Var(R) / R^2``.
    """
    se = math.sqrt(control.var + treatment.var)
    if se == 0:
        return None
    pc, pt = control.ratio, treatment.ratio
    diff = pt - pc
    z = diff / se
    zq = _normal_quantile(0.5 + confidence / 2)
    if pc > 0 and pt > 0:
        se_log = math.sqrt(control.var / pc**2 + treatment.var / pt**2)
        log_ratio = math.log(pt / pc)
        lift, lift_low, lift_high = (pt / pc - 1, math.exp(log_ratio - zq * se_log) - 1,
                                     math.exp(log_ratio + zq * se_log) - 1)
    else:
        lift = lift_low = lift_high = float("nan")
    return LiftResult(pc, pt, diff, diff - zq * se, diff + zq * se, lift, lift_low, lift_high,
                      z, 2 * normal_sf(abs(z)))


def msprt(theta: float, var: float, tau: float) -> float:
    """One-look mSPRT p-value of an estimated difference ``theta`` with variance ``var``.

    Normal mixture N(0, tau^2) over the effect (Johari et al., KDD 2017): the p-value is
    ``1 / LR`` capped at 1, where ``LR = sqrt(V / (V + tau^2)) exp(theta^2 tau^2 / (2 V (V +
    tau^2)))``.
    """
    if var <= 0 or not math.isfinite(var):
        return 1.0
    t2 = tau * tau
    log_lr = 0.5 * math.log(var / (var + t2)) + theta * theta * t2 / (2 * var * (var + t2))
    return 1.0 if log_lr <= 0 else min(1.0, math.exp(-log_lr))


def msprt_p_value(clicks_c: int, imps_c: int, clicks_t: int, imps_t: int,
                  tau: float = 0.02) -> float:
    """One-look mSPRT p-value (1 / mixture likelihood ratio, capped at 1).

    Normal approximation of the difference in CTR with a N(0, tau^2) mixture over the
    effect (Johari et al., "Peeking at A/B tests", KDD 2017). Take the running minimum over
    looks (:class:`SequentialTest`) to get the always-valid p-value.
    """
    if imps_c <= 1 or imps_t <= 1:
        return 1.0
    pc, pt = clicks_c / imps_c, clicks_t / imps_t
    return msprt(pt - pc, pc * (1 - pc) / imps_c + pt * (1 - pt) / imps_t, tau)


class SequentialTest:
    """Always-valid p-value: the running minimum of mSPRT p-values over every look.

    Watching it continuously does not inflate false positives: under no difference, the
    chance it *ever* drops below alpha is at most about alpha.

    The mixture scale ``tau`` should be the size of effect worth finding. An absolute
    0.02 suits a 10% CTR but is hopeless at 0.5% (the test then needs an effect of several
    times the CTR itself), so by default ``tau`` is relative: ``mde`` times the control's
    CTR, estimated once from its first ``burn_in`` impressions and then fixed (the p-value
    is 1 until then). The estimate uses the control arm only, never the difference, and
    is frozen before any look counts, so the running minimum keeps its guarantee.

    Args:
        tau: a fixed absolute scale (CTR difference); None: ``mde`` x control CTR.
        mde: the relative lift of interest (0.1 = 10%).
        burn_in: control impressions (with at least one click) before ``tau`` is fixed.
    """

    def __init__(self, tau: float | None = None, mde: float = 0.1, burn_in: int = 1000) -> None:
        self.tau = tau
        self.mde, self.burn_in = mde, burn_in
        self.p_value = 1.0

    def update(self, clicks_c: int, imps_c: int, clicks_t: int, imps_t: int) -> float:
        """Look at the current totals (impression level); the always-valid p-value so far."""
        tau = self._ready(clicks_c, imps_c)
        if tau is None or imps_t <= 1:
            return self.p_value
        self.p_value = min(self.p_value, msprt_p_value(clicks_c, imps_c, clicks_t, imps_t, tau))
        return self.p_value

    def update_ratio(self, control: RatioEstimate | None, treatment: RatioEstimate | None
                     ) -> float:
        """Look at user-level ratio estimates; the always-valid p-value so far."""
        if control is None or treatment is None:
            return self.p_value
        tau = self._ready(control.numerator, control.denominator)
        if tau is None:
            return self.p_value
        self.p_value = min(self.p_value, msprt(treatment.ratio - control.ratio,
                                               control.var + treatment.var, tau))
        return self.p_value

    def _ready(self, clicks_c: int, imps_c: int) -> float | None:
        """The mixture scale, fixing it from the control once burnt in; None before."""
        if self.tau is None:
            if imps_c < self.burn_in or clicks_c == 0:
                return None
            self.tau = self.mde * clicks_c / imps_c
        return self.tau


def srm_p_value(observed: Sequence[int], shares: Sequence[float]) -> float:
    """Pearson chi-square goodness-of-fit p-value of counts against configured shares."""
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return 1.0
    norm = sum(shares)
    stat = sum((o - total * s / norm) ** 2 / (total * s / norm)
               for o, s in zip(observed, shares, strict=True))
    return chi2_sf(stat, len(observed) - 1)


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution (regularised upper gamma Q)."""
    if x <= 0:
        return 1.0
    return _gamma_q(df / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    # Series for P when x < a + 1, Lentz continued fraction for Q otherwise.
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(500):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def _normal_quantile(p: float) -> float:
    # Acklam's rational approximation refined by one Newton step: |error| < 1e-12.
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
         3.754408661907416e00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p > 1 - 0.02425:
        return -_normal_quantile(1 - p)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    err = 0.5 * math.erfc(-x / math.sqrt(2)) - p
    return x - err * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
