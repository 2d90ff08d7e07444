import numpy as np

from worker.experiments.drift import Adwin, LabelDrift, ScorePSI, psi


def test_psi_is_zero_for_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    assert psi(ref, rng.normal(size=20_000)) < 0.01
    assert psi(ref, rng.normal(0.5, 1, size=20_000)) > 0.1
    assert psi(ref, rng.normal(1.5, 1, size=20_000)) > 0.25


def test_score_psi_quiet_when_stationary_alerts_after_shift():
    rng = np.random.default_rng(1)
    det = ScorePSI(window=3000)
    for _ in range(30):
        det.update(rng.beta(2, 8, size=500))
        assert not det.alert
    fired_at = None
    for k in range(30):
        det.update(rng.beta(4, 6, size=500))
        if det.alert and fired_at is None:
            fired_at = k
    assert fired_at is not None and fired_at <= 6


def test_adwin_no_alarm_on_stationary_stream_and_fast_detection_after_change():
    rng = np.random.default_rng(2)
    det = Adwin(delta=0.002)
    false_alarms = sum(det.update(v) for v in rng.binomial(1, 0.3, size=20_000).astype(float))
    assert false_alarms == 0
    detected_after = None
    for k, v in enumerate(rng.binomial(1, 0.5, size=5000).astype(float)):
        if det.update(v):
            detected_after = k
            break
    assert detected_after is not None and detected_after < 1000
    assert det.last_change > 0  # the loss (here: the mean) went up


def test_label_drift_quiet_then_alerts():
    rng = np.random.default_rng(3)
    det = LabelDrift(window=4000)
    for _ in range(40):
        det.update(rng.binomial(1, 0.2, size=500))
        assert not det.alert
    for _ in range(20):
        det.update(rng.binomial(1, 0.3, size=500))
    assert det.alert and det.score > 0.3


def test_embedding_drift_measures_moves_on_shared_items_full_or_delta():
    from worker.config import DriftSettings
    from worker.experiments.drift_monitor import DriftMonitor

    rng = np.random.default_rng(4)
    a = rng.normal(size=(100, 8)).astype(np.float32)
    b = a.copy()
    b[:10] = rng.normal(size=(10, 8))  # 10 items move to unrelated directions
    ids = [f"i{k}" for k in range(100)]
    full, delta = DriftMonitor(DriftSettings(), "c"), DriftMonitor(DriftSettings(), "c")
    for monitor in (full, delta):
        monitor.observe_publish("a", ids, a)
    full.observe_publish("a", ids + ["new"], np.vstack([b, np.ones((1, 8))]))
    # The same version as a delta: only the moved rows and the new one.
    delta.observe_publish("a", ids[:10] + ["new"], np.vstack([b[:10], np.ones((1, 8))]),
                          delta=True)
    for monitor in (full, delta):
        shift, moved = monitor.embedding["a"]
        assert 0.05 < shift < 0.2 and 0.05 <= moved <= 0.12
    assert np.allclose(full.embedding["a"], delta.embedding["a"])
    full.observe_publish("a", ids, b)
    assert abs(full.embedding["a"][0]) < 1e-6 and full.embedding["a"][1] == 0.0
    assert np.array_equal(delta._last_vectors["a"][1][:100], b)  # the delta was applied


def test_zero_or_unchanged_vectors_never_alert_and_a_frozen_arm_stays_quiet():
    from worker.config import DriftSettings
    from worker.experiments.drift_monitor import DriftMonitor

    ids = [f"i{k}" for k in range(50)]
    monitor = DriftMonitor(DriftSettings(), "control")
    zeros = np.zeros((50, 8), np.float32)
    frozen = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    for _ in range(3):  # a frozen arm republishes the same vectors (new items aside)
        monitor.observe_publish("control", ids, frozen)
        monitor.observe_publish("ids_only", ids, zeros)
    snap = monitor.snapshot()["embedding"]
    assert snap["control"] == {"mean_cosine_shift": 0.0, "moved_share": 0.0, "alert": False}
    assert snap["ids_only"]["alert"] is False and snap["ids_only"]["moved_share"] == 0.0


def test_the_response_an_alert_claims_happens_and_is_counted():
    from worker.config import DriftSettings
    from worker.experiments.drift_monitor import DriftMonitor

    responses = []
    cfg = DriftSettings(label_window=200, boost_cycles=3, boost_recent_share=0.9)
    monitor = DriftMonitor(cfg, "control", on_response=lambda: responses.append(1))
    rng = np.random.default_rng(1)
    assert monitor.next_recent_share(None) is None and not responses
    for ctr in (0.05, 0.05, 0.05, 0.4, 0.4, 0.4):  # the label CTR jumps
        labels = (rng.random(200) < ctr).astype(float)
        monitor.observe_predictions("control", np.full(200, 0.05), labels)
    assert monitor.alerts()["label_ctr"]
    shares = [monitor.next_recent_share(None) for _ in range(2)]
    assert shares == [0.9, 0.9] and len(responses) == 2  # one count per boosted cycle


def test_detectors_skip_the_settle_budget():
    from worker.config import DriftSettings
    from worker.experiments.drift_monitor import DriftMonitor

    monitor = DriftMonitor(DriftSettings(start_after_samples=500, label_window=200),
                           "control")
    for _ in range(3):  # the batch that spends the budget is skipped too
        monitor.observe_predictions("control", np.full(200, 0.1), np.zeros(200))
    assert monitor.settled and monitor.seen == 600 and not monitor.loss.values
    monitor.observe_predictions("control", np.full(200, 0.1), np.zeros(200))
    assert len(monitor.loss.values) == 200  # only the batch after the budget was fed


def test_detectors_can_be_held_through_a_known_transient_then_settle():
    from worker.config import DriftSettings
    from worker.experiments.drift_monitor import DriftMonitor

    monitor = DriftMonitor(DriftSettings(), "control")
    monitor.settle_for(None)  # e.g. the demo, until its pre-warm backlog is drained
    for _ in range(5):
        monitor.observe_predictions("control", np.full(200, 0.1), np.zeros(200))
    assert not monitor.settled and not monitor.loss.values
    monitor.settle_for(300)
    for _ in range(3):
        monitor.observe_predictions("control", np.full(200, 0.1), np.zeros(200))
    assert monitor.settled and len(monitor.loss.values) == 200


def _joined_stream(seed: int, seconds: int = 600, shift_at_s: int | None = None):
    """What a frozen, calibrated model's cycles see: impressions at 20/s, clicks 2 s later,
    a 5 s join window, and a watermark that moves in 15 s jumps (a lagging partition):
    positives arrive at click time, negatives in bursts. Yields (probs, labels, ts) per
    second of arrival."""
    rng = np.random.default_rng(seed)
    n = seconds * 20
    ts = np.sort(rng.uniform(0, seconds * 1000, n)).astype(np.int64)
    p = rng.beta(3, 7, n)
    truth = p if shift_at_s is None else np.where(ts >= shift_at_s * 1000,
                                                   np.minimum(p + 0.2, 1.0), p)
    y = rng.binomial(1, truth).astype(float)
    arrive = np.where(y == 1, ts + 2000, ((ts + 5000) // 15_000 + 1) * 15_000)
    for sec in range(seconds + 30):
        sel = (arrive >= sec * 1000) & (arrive < (sec + 1) * 1000)
        if sel.any():
            yield sec, p[sel], y[sel], ts[sel]


def test_detectors_read_the_join_in_event_time_so_a_stationary_stream_stays_quiet():
    from worker.config import DriftSettings
    from worker.experiments.drift_monitor import DriftMonitor

    arrival = DriftMonitor(DriftSettings(), "control")
    event_time = DriftMonitor(DriftSettings(), "control")
    alerts_arrival = alerts_event = 0
    for _, p, y, ts in _joined_stream(5):
        arrival.observe_predictions("control", p, y)  # the old reading: arrival order
        event_time.observe_predictions("control", p, y, ts)
        alerts_arrival += any(arrival.alerts().values())
        alerts_event += any(event_time.alerts().values())
    assert alerts_arrival > 50  # the label mix swinging with the watermark looked like drift
    assert alerts_event == 0 and event_time.loss.detections == 0
    assert event_time.seen > 11_000  # everything but the last window reached the detectors
    shifted = DriftMonitor(DriftSettings(), "control")
    first = None
    for sec, p, y, ts in _joined_stream(6, shift_at_s=300):
        shifted.observe_predictions("control", p, y, ts)
        if first is None and shifted.alerts()["loss_adwin"]:
            first = sec
    assert first is not None and 300 < first < 360  # a real change still shows, soon


def test_embedding_alert_needs_several_versions_in_a_row_that_moved_most_items():
    from worker.config import DriftSettings
    from worker.experiments.drift_monitor import DriftMonitor

    rng = np.random.default_rng(7)
    ids = [f"i{k}" for k in range(200)]
    base = rng.normal(size=(200, 8))
    monitor = DriftMonitor(DriftSettings(), "control")  # embedding_alert_versions = 3

    def alert() -> bool:
        return monitor.snapshot()["embedding"]["fresh"]["alert"]

    monitor.observe_publish("fresh", ids, base)
    monitor.observe_publish("fresh", ids, rng.normal(size=(200, 8)))  # one jumpy version
    monitor.observe_publish("fresh", ids, monitor._last_vectors["fresh"][1] * 1.01)
    assert not alert()
    for _ in range(2):
        monitor.observe_publish("fresh", ids, rng.normal(size=(200, 8)))
        assert not alert()
    monitor.observe_publish("fresh", ids, rng.normal(size=(200, 8)))  # the third in a row
    assert alert()
