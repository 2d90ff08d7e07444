"""The experiment's settings: arms, their policies and ramps, and the statistics' knobs.

Kept apart from the rest of the tree because the experiment is validated as a whole (unique
arm names, a control among them, ramps that end within an arm's share).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from worker.config.section import Section

__all__ = ["ArmSettings", "ExperimentSettings"]


class ArmSettings(Section):
    """One experiment arm: a model lineage served to a share of traffic."""

    name: str
    lineage: Literal["frozen", "incremental", "distilled"] = "incremental"
    share: float = Field(0.5, gt=0, le=1)
    dim: int | None = None  # None: model.dim
    teacher: str | None = None  # for lineage "distilled": the arm whose model teaches
    policy: Literal["greedy", "epsilon", "ucb", "thompson"] = "greedy"  # serving policy
    epsilon: float = Field(0.1, ge=0, le=1)  # for policy "epsilon"
    # Guarded ramp: shares of all users, increasing, the last at most this arm's full
    # share (share / sum of shares); empty: the full share from the start.
    ramp: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _check_ramp(self) -> ArmSettings:
        steps = self.ramp
        if any(not 0 < s <= 1 for s in steps) or any(
                a >= b for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"arm {self.name!r}: ramp must be increasing shares in (0, 1]")
        return self


class ExperimentSettings(Section):
    """The running experiment: its arms and which one is control."""

    name: str = "fresh_vs_frozen"
    control: str = "control"
    salt: str = "freshrec"
    ctr_window_s: float = Field(300.0, gt=0)  # the worker's windowed CTR view
    stats_interval_s: float = Field(5.0, gt=0)  # statistics clock, independent of training
    # mSPRT mixture scale: None = sequential_mde x the control's CTR (fixed after
    # sequential_burn_in control impressions); a number = an absolute CTR difference.
    sequential_tau: float | None = Field(None, gt=0)
    sequential_mde: float = Field(0.1, gt=0)  # relative lift worth detecting
    sequential_burn_in: int = Field(1000, ge=1)
    srm_p_value: float = Field(0.001, gt=0, lt=1)
    # Units of the user-level statistics: users hashed into this many buckets per arm
    # (docs/contracts/metrics.md); 0 turns user-level statistics off.
    user_buckets: int = Field(1024, ge=0, le=65536)
    # The planned horizon (impressions of control + treatment) of the user-level
    # group-sequential test, which spends exactly alpha by then; None: that test is off.
    planned_impressions: int | None = Field(None, ge=1)
    # Guarded ramps (arms with a ``ramp``): impressions of an arm in a step before it may
    # advance, and the always-valid p-value under which a harmful arm is stopped.
    ramp_min_impressions: int = Field(5000, ge=1)
    ramp_alpha: float = Field(0.05, gt=0, lt=1)
    arms: tuple[ArmSettings, ...] = (
        ArmSettings(name="control", lineage="frozen", share=0.5),
        ArmSettings(name="fresh", lineage="incremental", share=0.5),
    )

    @model_validator(mode="after")
    def _check(self) -> ExperimentSettings:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        if self.control not in names:
            raise ValueError(f"control arm {self.control!r} is not among the arms {names}")
        total = sum(a.share for a in self.arms)
        for arm in self.arms:
            if arm.lineage == "distilled" and arm.teacher not in names:
                raise ValueError(f"distilled arm {arm.name!r} needs a teacher among {names}")
            if arm.ramp and arm.name == self.control:
                raise ValueError(f"the control arm {arm.name!r} cannot have a ramp")
            if arm.ramp and arm.ramp[-1] > arm.share / total + 1e-9:
                raise ValueError(f"arm {arm.name!r}: ramp ends at {arm.ramp[-1]:g}, above its "
                                 f"full share {arm.share / total:g} (share / sum of shares)")
        return self
