import json

from worker.tools.report import write_report


def snapshot(t, shifted, ctr_c, ctr_f, alert):
    arm = lambda c, lift: {"ctr_window": c, "impressions": 1000 * t, "auc": 0.6,  # noqa: E731
                           "lift": lift, "lift_low": lift and lift - 0.02,
                           "lift_high": lift and lift + 0.02}
    return {"t_s": t, "shifted": shifted, "drift": {"label_ctr": alert},
            "drift_scores": {"label_ctr": 0.3 if alert else 0.0},
            "arms": {"control": arm(ctr_c, None), "fresh": arm(ctr_f, 0.1)}}


def test_report_writes_a_png(tmp_path):
    hist = tmp_path / "h.jsonl"
    hist.write_text("\n".join(json.dumps(snapshot(t, t > 5, 0.2, 0.22, t > 6))
                              for t in range(1, 11)))
    paths = write_report(hist, tmp_path / "out")
    assert len(paths) == 1
    data = paths[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_pace_backs_off_while_the_backlog_does_not_shrink_and_recovers_after():
    from worker.tools.traffic import Pace

    pace = Pace(100.0)
    assert pace.adapt(lag=5000, window_s=5) == 100.0  # first look: no trend yet, but big
    pace = Pace(100.0)
    pace.adapt(lag=100, window_s=5)
    assert pace.adapt(lag=5000, window_s=5) < 100.0  # a growing backlog: back off
    rate = pace.rate
    assert pace.adapt(lag=2000, window_s=5) == rate  # shrinking fast: hold
    pace.adapt(lag=10, window_s=5)
    assert pace.adapt(lag=10, window_s=5) > rate  # caught up: climb back
