import numpy as np

from worker.experiments.drift import Adwin, LabelDrift, ScorePSI, embedding_drift, psi


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


def test_embedding_drift_measures_moves_on_shared_items():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(100, 8))
    b = a.copy()
    b[:10] = rng.normal(size=(10, 8))  # 10 items move to unrelated directions
    ids = [f"i{k}" for k in range(100)]
    shift, moved = embedding_drift(ids, a, ids + ["new"], np.vstack([b, np.ones((1, 8))]))
    assert 0.05 < shift < 0.2 and 0.05 <= moved <= 0.12
    shift0, moved0 = embedding_drift(ids, a, ids, a)
    assert abs(shift0) < 1e-9 and moved0 == 0.0
