"""A cycle's steps: the replay it does grows with what is new, not with a step minimum."""

from __future__ import annotations

from worker.config import TrainingSettings
from worker.learning.batches import cycle_plan


def _totals(plan: list[tuple[int, int, int]]) -> tuple[int, int]:
    return sum(hi - lo for lo, hi, _ in plan), sum(r for _, _, r in plan)


def test_every_new_sample_once_with_replay_in_proportion():
    cfg = TrainingSettings(batch_size=512, replay_ratio=1.0, warmup_cycles=0)
    for new in (1, 10, 255, 256, 257, 5000):
        plan = cycle_plan(new, cfg)
        trained, replay = _totals(plan)
        assert trained == new
        assert new <= replay <= new + len(plan)  # ceil per step
        assert all(hi - lo + r <= 512 for lo, hi, r in plan)
        # the new samples are contiguous and in order
        assert [lo for lo, _, _ in plan] == [hi for _, hi, _ in [(0, 0, 0), *plan[:-1]]]


def test_a_quiet_cycle_no_longer_replays_twenty_batches():
    """The old default (20 steps at least) replayed ~10k rows for 10 new samples."""
    cfg = TrainingSettings(warmup_cycles=0)
    assert _totals(cycle_plan(10, cfg)) == (10, 10)
    assert cycle_plan(0, cfg) == []  # nothing new: no training


def test_the_ratio_sets_the_mix():
    cfg = TrainingSettings(batch_size=300, replay_ratio=2.0, warmup_cycles=0)
    plan = cycle_plan(1000, cfg)
    assert [(hi - lo, r) for lo, hi, r in plan[:2]] == [(100, 200), (100, 200)]
    assert _totals(cycle_plan(50, TrainingSettings(replay_ratio=0.0, warmup_cycles=0))) \
        == (50, 0)


def test_a_step_minimum_adds_full_replay_batches():
    cfg = TrainingSettings(batch_size=128, steps_per_cycle=3, warmup_cycles=0)
    assert cycle_plan(10, cfg) == [(0, 10, 10), (10, 10, 128), (10, 10, 128)]


def test_warm_up_minimum_is_at_most_one_pass_over_the_buffers():
    cfg = TrainingSettings(batch_size=100, warmup_cycles=2, warmup_steps_per_cycle=20)
    assert len(cycle_plan(10, cfg, cycles_done=0, buffered=100_000)) == 20
    assert len(cycle_plan(10, cfg, cycles_done=0, buffered=450)) == 5
    assert len(cycle_plan(10, cfg, cycles_done=2, buffered=100_000)) == 1  # warmed up


def test_a_backlog_is_capped_at_max_steps():
    cfg = TrainingSettings(batch_size=100, max_steps_per_cycle=4, warmup_cycles=0)
    plan = cycle_plan(10_000, cfg)
    assert len(plan) == 4 and _totals(plan) == (200, 200)
