from collections import Counter

import numpy as np
from prometheus_client import generate_latest

from consumers.pipeline import BatchReport
from model_store.counters import MemoryCounters
from worker.config import DriftSettings, ExperimentSettings
from worker.metrics import Metrics
from worker.monitor import DriftMonitor, ExperimentMonitor


def report(arm_counts: dict, items: dict | None = None) -> BatchReport:
    r = BatchReport()
    r.arm_events = Counter(arm_counts)
    r.item_events = Counter(items or {})
    return r


def test_stats_per_arm_with_tests_against_control_and_metrics():
    metrics = Metrics()
    mon = ExperimentMonitor(ExperimentSettings(), metrics, MemoryCounters())
    for _ in range(20):
        mon.record(report({("control", "impression"): 500, ("control", "click"): 50,
                           ("control", "request"): 100, ("fresh", "impression"): 500,
                           ("fresh", "click"): 70, ("fresh", "request"): 100,
                           ("rogue-arm", "impression"): 3}))
    stats = mon.stats()
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


def test_srm_flags_skewed_requests():
    mon = ExperimentMonitor(ExperimentSettings())
    mon.record(report({("control", "request"): 5000, ("fresh", "request"): 5600}))
    assert mon.stats()["srm_alert"]


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
    metrics = Metrics()
    mon = DriftMonitor(DriftSettings(psi_window=1000, label_window=1000, boost_cycles=2),
                       "control", metrics)
    rng = np.random.default_rng(0)
    for _ in range(10):
        mon.observe_predictions("control", rng.beta(2, 8, 400), rng.binomial(1, 0.2, 400))
        mon.observe_predictions("fresh", rng.beta(8, 2, 400), rng.binomial(1, 0.9, 400))
    assert not any(mon.alerts().values())
    assert mon.recent_share(0.5) == 0.5
    for _ in range(10):
        mon.observe_predictions("control", rng.beta(5, 5, 400), rng.binomial(1, 0.4, 400))
    assert mon.alerts()["score_psi"] and mon.alerts()["label_ctr"]
    assert mon.recent_share(0.5) == 0.9
    snap = mon.export()
    assert snap["score_psi"]["alert"]
    assert metrics.registry.get_sample_value(
        "freshrec_drift_alert", {"signal": "score_psi", "arm": "control"}) == 1.0
    assert metrics.registry.get_sample_value("freshrec_drift_responses_total") == 1.0
