from collections import Counter

import numpy as np
from prometheus_client import generate_latest

from consumers.pipeline import BatchReport
from model_store.counters import MemoryCounters
from worker.config import DriftSettings, ExperimentSettings
from worker.experiments.drift_monitor import DriftMonitor
from worker.experiments.monitor import ExperimentMonitor
from worker.runtime.metrics import Metrics


def report(arm_counts: dict, items: dict | None = None) -> BatchReport:
    r = BatchReport()
    r.arm_events = Counter(arm_counts)
    r.item_events = Counter(items or {})
    return r


def test_stats_per_arm_with_tests_against_control_and_metrics():
    metrics = Metrics()
    metrics.configure_experiment("fresh_vs_frozen", ["control", "fresh"])
    counters = MemoryCounters()
    mon = ExperimentMonitor(ExperimentSettings(), counters)
    for _ in range(20):
        batch = report({("control", "impression"): 500, ("control", "click"): 50,
                        ("control", "request"): 100, ("fresh", "impression"): 500,
                        ("fresh", "click"): 70, ("fresh", "request"): 100,
                        ("rogue-arm", "impression"): 3})
        metrics.record_batch(batch)
        mon.record(batch)
        mon.update()
    stats = mon.snapshot()
    assert mon.snapshot() == stats  # a read changes nothing
    metrics.record_experiment(stats)
    fresh = stats["arms"]["fresh"]
    assert fresh["ctr"] == 0.14 and stats["arms"]["control"]["ctr"] == 0.10
    assert fresh["p_value"] < 1e-6 and fresh["sequential_p"] < 0.01
    assert fresh["lift_low"] < 0.4 < fresh["lift_high"]
    assert stats["srm_p_value"] == 1.0 and not stats["srm_alert"]
    text = generate_latest(metrics.registry).decode()
    exp = 'experiment="fresh_vs_frozen"'
    assert f'freshrec_arm_impressions_total{{arm="fresh",{exp}}} 10000.0' in text
    assert 'freshrec_arm_impressions_total{arm="other",experiment="fresh_vs_frozen"} 60.0' in text
    assert 'freshrec_experiment_p_value{arm="fresh",experiment="fresh_vs_frozen",test="z"}' in text
    assert "rogue-arm" not in text  # unknown arms never become label values
    assert 'freshrec_experiment_diff{arm="fresh",bound="low",experiment="fresh_vs_frozen"}' in text
    mon.flush()
    assert set(counters.arm_totals()) == {"control", "fresh", "other"}  # Redis bounded too


def test_arm_counters_exist_at_zero_before_the_first_event():
    metrics = Metrics()
    metrics.configure_experiment("e", ["control", "fresh"])
    for arm in ("control", "fresh", "other"):
        assert metrics.registry.get_sample_value(
            "freshrec_arm_clicks_total", {"experiment": "e", "arm": arm}) == 0.0


def test_srm_flags_skewed_requests():
    mon = ExperimentMonitor(ExperimentSettings())
    mon.record(report({("control", "request"): 5000, ("fresh", "request"): 5600}))
    assert mon.snapshot()["srm_alert"]


def test_restored_deltas_are_applied_exactly_once():
    counters = MemoryCounters()
    mon = ExperimentMonitor(ExperimentSettings(), counters=counters)
    mon.record(report({("fresh", "click"): 2}, {("i1", "click"): 2}))
    state = mon.state()  # checkpoint holds the deltas and their token...
    assert mon.flush()  # ...then they are applied; the process dies before the next checkpoint
    again = ExperimentMonitor(ExperimentSettings(), counters=counters)
    again.load(state)  # restart: re-sends the same token, which is skipped
    assert counters.arm_totals()["fresh"]["click"] == 2
    again.record(report({("fresh", "click"): 1}))
    again.flush()
    assert counters.arm_totals()["fresh"]["click"] == 3


def test_drift_monitor_watches_only_the_reference_arm_and_boosts_replay():
    responses = []
    mon = DriftMonitor(DriftSettings(psi_window=1000, label_window=1000, boost_cycles=2),
                       "control", on_response=lambda: responses.append(1))
    rng = np.random.default_rng(0)
    for _ in range(10):
        mon.observe_predictions("control", rng.beta(2, 8, 400), rng.binomial(1, 0.2, 400))
        mon.observe_predictions("fresh", rng.beta(8, 2, 400), rng.binomial(1, 0.9, 400))
    assert not any(mon.alerts().values())
    assert mon.next_recent_share(0.5) == 0.5
    for _ in range(10):
        mon.observe_predictions("control", rng.beta(5, 5, 400), rng.binomial(1, 0.4, 400))
    assert mon.alerts()["score_psi"] and mon.alerts()["label_ctr"]
    assert mon.next_recent_share(0.5) == 0.9
    snap = mon.snapshot()
    assert snap["score_psi"]["alert"]
    metrics = Metrics()
    metrics.record_drift(snap)
    assert metrics.registry.get_sample_value(
        "freshrec_drift_alert", {"signal": "score_psi", "arm": "control"}) == 1.0
    assert responses == [1]
