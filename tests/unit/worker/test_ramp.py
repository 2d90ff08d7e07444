"""Guarded ramps: shares, assignment, advancing, stopping on harm, holding on SRM, release."""

from collections import Counter

import numpy as np
import pytest

from worker.config import ArmSettings, ExperimentSettings
from worker.experiments.arms import assign_arm
from worker.experiments.ramp import ArmRamp, LiveShares, RampController, live_shares
from worker.experiments.stats import user_bucket


class DictStore:
    """The two Redis calls the controller makes, on a dict (NX honoured, PX ignored)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, name):
        return self.data.get(name)

    def set(self, name, value, nx=False, px=None):
        if nx and name in self.data:
            return None
        self.data[name] = value
        return True


EXP = ExperimentSettings(
    user_buckets=256, ramp_min_impressions=2000, sequential_burn_in=500,
    arms=(ArmSettings(name="control", share=0.5),
          ArmSettings(name="good", share=0.25, ramp=(0.02, 0.1, 0.25)),
          ArmSettings(name="bad", share=0.25, ramp=(0.02, 0.1, 0.25))))


class Traffic:
    """Cumulative totals of users assigned by the live shares, CTR per arm."""

    def __init__(self, ctr: dict[str, float], seed: int = 0) -> None:
        self.ctr, self.rng = ctr, np.random.default_rng(seed)
        self.totals: dict[str, Counter] = {a.name: Counter() for a in EXP.arms}
        self.n = 0

    def serve(self, shares: dict[str, float], requests: int) -> dict[str, Counter]:
        for _ in range(requests):
            user = f"u{self.rng.integers(20_000)}"
            arm = assign_arm(user, EXP.arms, EXP.salt, shares, EXP.control)
            b = user_bucket(user, EXP.user_buckets)
            t = self.totals[arm]
            t["request"] += 1
            for _ in range(4):
                t["impression"] += 1
                t[f"impression@{b}"] += 1
                if self.rng.random() < self.ctr[arm]:
                    t["click"] += 1
                    t[f"click@{b}"] += 1
        return self.totals


def test_live_shares_give_control_what_ramped_arms_do_not_have_yet():
    ramps = {"good": ArmRamp(share=0.02), "bad": ArmRamp(share=0.1, stopped=True)}
    shares = live_shares(EXP, ramps)
    assert shares == pytest.approx({"control": 0.98, "good": 0.02, "bad": 0.0})
    users = [f"u{i}" for i in range(20_000)]
    first = {u: assign_arm(u, EXP.arms, EXP.salt, shares, "control") for u in users}
    assert Counter(first.values())["good"] == pytest.approx(400, rel=0.2)
    later = live_shares(EXP, {"good": ArmRamp(share=0.1), "bad": ArmRamp(share=0.1)})
    again = {u: assign_arm(u, EXP.arms, EXP.salt, later, "control") for u in users}
    assert all(again[u] == "good" for u, a in first.items() if a == "good")  # sticky
    assert Counter(again.values())["bad"] == pytest.approx(2000, rel=0.1)


def test_a_good_arm_ramps_to_its_target_and_a_harmful_one_is_stopped_once():
    store = DictStore()
    ctl = RampController(EXP, store, "k")
    other = RampController(EXP, store, "k")  # a second worker: reads, never acts
    traffic = Traffic({"control": 0.10, "good": 0.11, "bad": 0.05})
    actions: list[tuple[str, str]] = []
    for _ in range(80):
        totals = traffic.serve(ctl.shares(), 1000)
        ctl.look(totals)  # takes the lease first
        actions += ctl.actions
        other.look(totals)
        assert other.actions == []
        if not ctl.actions:  # nothing moved in between: both judge the same
            assert other.srm_p_value == ctl.srm_p_value
    state = ctl.load()
    assert state["good"].step == 2 and state["good"].share == 0.25 and not state["good"].stopped
    assert state["bad"].stopped and state["bad"].share == 0.0
    assert "CTR lower than control" in state["bad"].reason
    assert actions.count(("bad", "stop")) == 1 and actions.count(("good", "advance")) == 2
    assert ctl.shares() == pytest.approx({"control": 0.75, "good": 0.25, "bad": 0.0})
    released = ctl.release("bad", traffic.totals)
    assert not released.stopped and released.share == EXP.arms[2].ramp[released.step]
    with pytest.raises(ValueError, match="has no ramp"):
        ctl.release("control", traffic.totals)


def test_a_sample_ratio_mismatch_holds_the_ramp():
    store = DictStore()
    ctl = RampController(EXP, store, "k")
    traffic = Traffic({"control": 0.1, "good": 0.1, "bad": 0.1})
    ctl.look(traffic.serve(ctl.shares(), 200))
    skewed = traffic.serve(ctl.shares(), 3000)
    skewed["good"]["request"] += 400  # a logging bug: the arm reports too many requests
    skewed["good"]["impression"] += 3000
    state = ctl.look(skewed)
    assert ctl.srm_p_value < EXP.srm_p_value
    assert state["good"].held and state["good"].step == 0 and "sample-ratio" in state["good"].reason
    assert ("good", "hold") in ctl.actions


def test_serving_keeps_the_last_shares_when_the_state_cannot_be_read():
    store = DictStore()
    ctl = RampController(EXP, store, "k")
    now = [0.0]
    live = LiveShares(ctl, max_age_s=1.0, clock=lambda: now[0])
    assert live()["good"] == 0.02
    ctl.save({"good": ArmRamp(step=1, share=0.1), "bad": ArmRamp(share=0.0, stopped=True)})
    assert live()["good"] == 0.02  # cached for max_age_s
    now[0] = 2.0
    assert live() == pytest.approx({"control": 0.9, "good": 0.1, "bad": 0.0})

    def down(name):
        raise ConnectionError("redis down")

    store.get = down
    now[0] = 4.0
    assert live()["good"] == 0.1


def test_ramp_settings_are_checked():
    with pytest.raises(ValueError, match="increasing"):
        ArmSettings(name="a", ramp=(0.1, 0.05))
    with pytest.raises(ValueError, match="above its full share"):
        ExperimentSettings(arms=(ArmSettings(name="control", share=0.5),
                                 ArmSettings(name="fresh", share=0.5, ramp=(0.1, 0.9))))
    with pytest.raises(ValueError, match="cannot have a ramp"):
        ExperimentSettings(arms=(ArmSettings(name="control", share=0.5, ramp=(0.1,)),
                                 ArmSettings(name="fresh", share=0.5)))
