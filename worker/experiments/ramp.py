"""Guarded ramps: a treatment's share of users grows step by step while its guardrails hold.

An arm with a ramp schedule (``ArmSettings.ramp``, e.g. 1% -> 5% -> 25% -> 50% of users)
starts at the first step. On every look (the statistics clock) the controller:

1. **Guards against harm.** An always-valid user-level test (mSPRT on the bucketed,
   delta-method CTR; and on purchases per impression where the control has purchases)
   compares the arm with control on everything since the ramp started (or since a human
   released it). Significant harm (p below ``ramp_alpha`` and the 95% interval of the
   difference below 0) stops the arm: its share drops to 0, once, with a log line, a
   metric and a reason in ``freshrec status``; its users go back to control. It stays
   stopped until ``freshrec ramp release ARM``.
2. **Checks the assignment.** Requests since the step began are compared with the live
   shares (sample-ratio mismatch). A mismatch holds the ramp where it is.
3. **Advances** when the arm has ``ramp_min_impressions`` impressions in its current step
   and neither guard fired.

The state lives in Redis (one JSON document per experiment), so it survives restarts, is
the same for every worker and every ``freshrec serve``, and the totals it is judged on are
the shared exactly-once counters of every worker. One worker at a time acts (a lease in
Redis); the others only read, so they report the same SRM.

Assignment stays sticky as shares grow: each arm owns a fixed slice of the hash space of
its full share; a ramped arm uses the first ``live`` part of that slice and the rest of it
goes to control, so a step only adds users to the arm (see :func:`live_shares`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from worker.config import ExperimentSettings
from worker.experiments.stats import SequentialTest, compare_ratio, srm_p_value
from worker.experiments.summary import Counts, user_ratio

__all__ = ["ArmRamp", "LiveShares", "RampController", "RampStore", "live_shares", "ramp_key"]

log = logging.getLogger(__name__)


def ramp_key(prefix: str, experiment: str) -> str:
    """The Redis key of an experiment's ramp state."""
    return f"{prefix}:experiment:{experiment}:ramp"


@dataclass
class ArmRamp:
    """One ramped arm's state."""

    step: int = 0
    share: float = 0.0
    stopped: bool = False
    held: bool = False  # the last look saw a sample-ratio mismatch
    reason: str = ""
    #: totals when the current step began (requests per arm; this arm's impressions)
    step_requests: dict[str, int] = field(default_factory=dict)
    step_impressions: int = 0
    #: totals of control and this arm when the ramp started or was released
    baseline: dict[str, dict[str, int]] = field(default_factory=dict)
    p_ctr: float = 1.0
    tau_ctr: float | None = None
    p_purchase: float = 1.0
    tau_purchase: float | None = None


class RampStore(Protocol):
    """Where the ramp state lives (a Redis client is one)."""

    def get(self, name: str) -> bytes | None:
        """The stored document, or None."""
        ...

    def set(self, name: str, value: bytes, **kwargs: Any) -> Any:
        """Store a document (``nx``/``px`` for the lease)."""
        ...


def live_shares(exp: ExperimentSettings, ramps: Mapping[str, ArmRamp]) -> dict[str, float]:
    """Each arm's share of users now: ramped arms at their step, control gets the rest.

    Shares are fractions of all users (the configured shares normalised to 1).
    """
    total = sum(a.share for a in exp.arms)
    out: dict[str, float] = {}
    spare = 0.0
    for arm in exp.arms:
        full = arm.share / total
        if arm.name in ramps and arm.name != exp.control:
            r = ramps[arm.name]
            live = 0.0 if r.stopped else min(r.share, full)
            out[arm.name] = live
            spare += full - live
        else:
            out[arm.name] = full
    out[exp.control] += spare
    return out


def _minus(totals: Counts, base: Mapping[str, Mapping[str, int]], arm: str) -> dict[str, int]:
    now, then = totals.get(arm, {}), base.get(arm, {})
    return {k: n - then.get(k, 0) for k, n in now.items()}


def _sequential(exp: ExperimentSettings, p: float, tau: float | None) -> SequentialTest:
    test = SequentialTest(exp.sequential_tau if exp.sequential_tau else tau,
                          exp.sequential_mde, exp.sequential_burn_in)
    test.p_value = p
    return test


class RampController:
    """Reads, judges and (while holding the lease) moves the ramps of one experiment.

    Args:
        exp: the experiment; arms with a non-empty ``ramp`` are ramped.
        store: the Redis client (or any :class:`RampStore`).
        key: where the state lives (:func:`ramp_key`).
        lease_s: how long one worker's right to act lasts without a renewal.
    """

    def __init__(self, exp: ExperimentSettings, store: RampStore, key: str,
                 lease_s: float = 30.0) -> None:
        self.exp, self.store, self.key = exp, store, key
        self.lease_ms = int(lease_s * 1000)
        self.owner = uuid.uuid4().hex
        self.ramped = [a for a in exp.arms if a.ramp and a.name != exp.control]
        self.srm_p_value = 1.0
        self.actions: list[tuple[str, str]] = []  # (arm, advance | stop | hold) of the last look

    def load(self) -> dict[str, ArmRamp]:
        """The stored state, with ramped arms not yet stored at their first step."""
        raw = self.store.get(self.key)
        stored = json.loads(raw) if raw else {}
        out = {}
        for arm in self.ramped:
            doc = stored.get(arm.name)
            out[arm.name] = ArmRamp(**doc) if doc else ArmRamp(step=0, share=arm.ramp[0])
        return out

    def save(self, ramps: Mapping[str, ArmRamp]) -> None:
        """Write the whole state (one document: a reader never sees half a step)."""
        self.store.set(self.key, json.dumps({a: asdict(r) for a, r in ramps.items()}).encode())

    def shares(self) -> dict[str, float]:
        """Live shares from the stored state (what serving assigns by)."""
        return live_shares(self.exp, self.load())

    def _lease(self) -> bool:
        """Take or renew the right to act; True while this worker holds it."""
        lock = self.key + ":lease"
        if self.store.set(lock, self.owner.encode(), nx=True, px=self.lease_ms):
            return True
        held = self.store.get(lock)
        if held is not None and held.decode() == self.owner:
            self.store.set(lock, self.owner.encode(), px=self.lease_ms)
            return True
        return False

    def look(self, totals: Counts, act: bool = True) -> dict[str, ArmRamp]:
        """Judge every ramped arm on ``totals`` (the shared counters); the state after.

        With ``act`` and the lease held, advance, hold or stop the arms; otherwise only
        compute the sample-ratio mismatch (:attr:`srm_p_value`).
        """
        self.actions = []
        if not self.ramped:
            return {}
        ramps = self.load()
        acting = act and self._lease()
        changed = False
        if acting:
            for arm in self.ramped:
                if not ramps[arm.name].baseline:  # first look: the ramp starts now
                    self._restart(ramps[arm.name], totals, arm.name)
                    changed = True
        self.srm_p_value = self._srm(totals, ramps, live_shares(self.exp, ramps))
        if not acting:
            return ramps
        for arm in self.ramped:
            r = ramps[arm.name]
            if r.stopped:
                continue
            harm = self._harm(r, totals, arm.name)
            if harm:
                r.stopped, r.share, r.reason = True, 0.0, harm
                self._start_step(r, totals, arm.name)  # the shares change now: SRM restarts
                self.actions.append((arm.name, "stop"))
                log.warning("experiment %s: arm %s stopped, its users go back to %s: %s "
                            "(release with `freshrec ramp release %s`)", self.exp.name,
                            arm.name, self.exp.control, harm, arm.name)
                changed = True
                continue
            r.held = self.srm_p_value < self.exp.srm_p_value
            exposure = totals.get(arm.name, {}).get("impression", 0) - r.step_impressions
            if r.held:
                r.reason = f"held: sample-ratio mismatch (p = {self.srm_p_value:.2g})"
                self.actions.append((arm.name, "hold"))
                changed = True
            elif r.step + 1 < len(arm.ramp) and exposure >= self.exp.ramp_min_impressions:
                r.step += 1
                r.share = arm.ramp[r.step]
                r.reason = ""
                self._start_step(r, totals, arm.name)
                self.actions.append((arm.name, "advance"))
                log.info("experiment %s: arm %s ramped to %.1f%% of users (step %d of %d)",
                         self.exp.name, arm.name, 100 * r.share, r.step + 1, len(arm.ramp))
                changed = True
        if changed:
            self.save(ramps)
        return ramps

    def release(self, arm: str, totals: Counts) -> ArmRamp:
        """A human's release of a stopped (or held) arm: back to its step's share.

        The harm test starts afresh from the totals now.

        Raises:
            ValueError: ``arm`` is not a ramped arm of the experiment.
        """
        names = [a.name for a in self.ramped]
        if arm not in names:
            raise ValueError(f"arm {arm!r} has no ramp; ramped arms: {names}")
        ramps = self.load()
        r = ramps[arm]
        spec = next(a for a in self.ramped if a.name == arm)
        r.stopped, r.held, r.reason, r.share = False, False, "", spec.ramp[r.step]
        self._restart(r, totals, arm)
        self.save(ramps)
        log.info("experiment %s: arm %s released at %.1f%% of users", self.exp.name, arm,
                 100 * r.share)
        return r

    def _restart(self, r: ArmRamp, totals: Counts, arm: str) -> None:
        r.baseline = {a: dict(totals.get(a, {})) for a in (self.exp.control, arm)}
        r.p_ctr = r.p_purchase = 1.0
        r.tau_ctr = r.tau_purchase = None
        self._start_step(r, totals, arm)

    def _start_step(self, r: ArmRamp, totals: Counts, arm: str) -> None:
        r.step_requests = {a.name: totals.get(a.name, {}).get("request", 0)
                           for a in self.exp.arms}
        r.step_impressions = totals.get(arm, {}).get("impression", 0)

    def _harm(self, r: ArmRamp, totals: Counts, arm: str) -> str:
        """Why the arm harms users ("" if it does not), on totals since the baseline."""
        b = self.exp.user_buckets
        control = _minus(totals, r.baseline, self.exp.control)
        treated = _minus(totals, r.baseline, arm)
        why = ""
        for metric in ("click", "purchase"):
            if metric == "purchase" and not control.get("purchase", 0):
                continue
            c, t = user_ratio(control, metric, b), user_ratio(treated, metric, b)
            p_attr, tau_attr = f"p_{'ctr' if metric == 'click' else metric}", \
                f"tau_{'ctr' if metric == 'click' else metric}"
            test = _sequential(self.exp, getattr(r, p_attr), getattr(r, tau_attr))
            p = test.update_ratio(c, t)
            setattr(r, p_attr, p)
            setattr(r, tau_attr, test.tau)
            if c is None or t is None or p >= self.exp.ramp_alpha:
                continue
            res = compare_ratio(c, t)
            if res is not None and res.diff_high < 0 and not why:
                name = "CTR" if metric == "click" else "purchases per impression"
                why = (f"user-level {name} lower than {self.exp.control} (always-valid p = "
                       f"{p:.2g}, lift {res.lift:+.1%} [{res.lift_low:+.1%}, "
                       f"{res.lift_high:+.1%}])")
        return why

    def _srm(self, totals: Counts, ramps: Mapping[str, ArmRamp],
             shares: Mapping[str, float]) -> float:
        """SRM of requests since the latest step began, against the live shares."""
        starts = [r.step_requests for r in ramps.values() if r.step_requests]
        if not starts:
            return 1.0
        since = max(starts, key=lambda s: sum(s.values()))  # the most recent step start
        live = [a.name for a in self.exp.arms if shares.get(a.name, 0.0) > 0]
        observed = [totals.get(a, {}).get("request", 0) - since.get(a, 0) for a in live]
        return srm_p_value(observed, [shares[a] for a in live])


class LiveShares:
    """The live shares for serving: read from the ramp state at most every ``max_age_s``.

    A failed read keeps the last shares known (at first: every ramped arm at its first
    step, never its full share), so an outage of Redis cannot widen a ramp.
    """

    def __init__(self, controller: RampController, max_age_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.controller, self.max_age_s, self.clock = controller, max_age_s, clock
        self._shares = live_shares(controller.exp, {
            a.name: ArmRamp(share=a.ramp[0]) for a in controller.ramped})
        self._read_at = -float("inf")

    def __call__(self) -> dict[str, float]:
        """The shares to assign by now."""
        now = self.clock()
        if now - self._read_at >= self.max_age_s:
            self._read_at = now
            try:
                self._shares = self.controller.shares()
            except Exception as exc:  # noqa: BLE001 - any failure: keep the last known
                log.debug("ramp state unreadable, keeping the last shares: %s", exc)
        return self._shares
