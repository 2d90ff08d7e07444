"""Prometheus: the rules pass promtool, and a real Prometheus scrapes a worker's /metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from bench.quiet import prometheus
from consumers.pipeline import BatchReport
from worker.runtime.metrics import Metrics
from worker.tools.embedded import ManagedProcess, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed")


@needs_promtool
def test_rules_pass_promtool_check_and_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=DEPLOY,
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=DEPLOY,
                          capture_output=True, text=True, timeout=60, check=False)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


@needs_promtool
def test_prometheus_config_is_valid():
    check = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=DEPLOY,
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def start_prometheus(tmp_path, target_port: int) -> tuple[ManagedProcess, int]:
    """A real Prometheus scraping 127.0.0.1:target_port every second, with our rules."""
    return prometheus(tmp_path, target_port, interval="1s")


def prom_query(prom_port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        return json.load(resp)["data"]["result"]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_real_prometheus_scrapes_arm_counters(tmp_path):
    metrics = Metrics()
    port = free_port()
    http = metrics.serve("127.0.0.1", port)
    metrics.configure_experiment("fresh_vs_frozen", ["control", "fresh"])
    report = BatchReport()
    report.arm_events = Counter({("fresh", "impression"): 40, ("fresh", "click"): 6})
    metrics.record_batch(report)
    server, prom_port = start_prometheus(tmp_path, port)
    try:
        query = f"http://127.0.0.1:{prom_port}/api/v1/query?query=freshrec_arm_clicks_total"
        deadline, result = time.monotonic() + 30, []
        while time.monotonic() < deadline and not result:
            with urllib.request.urlopen(query, timeout=5) as resp:  # noqa: S310 - loopback only
                result = json.load(resp)["data"]["result"]
            time.sleep(0.5)
        assert result, "Prometheus never scraped freshrec_arm_clicks_total"
        by_arm = {r["metric"]["arm"]: float(r["value"][1]) for r in result}
        assert by_arm == {"control": 0.0, "fresh": 6.0, "other": 0.0}
    finally:
        server.stop()
        http.shutdown()
        http.server_close()


def _serve_events(port: int, batches: int, per_batch: dict[tuple[str, str], int]) -> None:
    """One worker process's life: counters from zero, events, a quiet moment, then gone."""
    metrics = Metrics()
    http = metrics.serve("127.0.0.1", port)
    metrics.configure_experiment("fresh_vs_frozen", ["control", "fresh"])
    try:
        time.sleep(2.5)  # scraped at zero first, as a freshly started worker is
        for _ in range(batches):
            report = BatchReport()
            report.arm_events = Counter(per_batch)
            metrics.record_batch(report)
            time.sleep(0.5)
        time.sleep(2.5)  # scraped at rest: the last sample is not torn between two counters
    finally:
        http.shutdown()
        http.server_close()


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_recording_rule_ctr_is_exact_across_a_counter_reset(tmp_path):
    """freshrec:arm_ctr:rate5m within 1% of the true CTR in the first minute, reset included.

    Two metrics servers on one port, one after the other, stand for a worker's two lives;
    the test below does the same with a real worker process.

    Series that appear already holding a value lose their first jump to rate(); counters
    created at zero at start-up do not.
    """
    port = free_port()
    server, prom_port = start_prometheus(tmp_path, port)
    per_batch = {("fresh", "impression"): 100, ("fresh", "click"): 7,
                 ("control", "impression"): 100, ("control", "click"): 5}
    try:
        _serve_events(port, 8, per_batch)
        _serve_events(port, 8, per_batch)  # the restarted worker: counters back at zero
        got = {r["metric"]["arm"]: float(r["value"][1])
               for r in prom_query(prom_port, "freshrec:arm_ctr:rate5m")}
    finally:
        server.stop()
    assert got["fresh"] == pytest.approx(0.07, rel=0.01)
    assert got["control"] == pytest.approx(0.05, rel=0.01)


def test_grafana_dashboard_queries_only_exported_metrics():
    import re

    dash = json.loads((DEPLOY.parent / "grafana" / "freshrec-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 8
    names = set(re.findall(r"freshrec_[a-z_]+", " ".join(exprs)))
    from prometheus_client import generate_latest

    m = Metrics()
    m.record_experiment({"experiment": "e", "arms": {"fresh": {
        "ctr": 0.1, "ctr_window": 0.1, "p_value": 0.5, "lift": 0.0, "lift_low": -0.1,
        "lift_high": 0.1, "diff": 0.0, "diff_low": -0.01, "diff_high": 0.01,
        "sequential_p": 0.5}}, "srm_p_value": 0.5, "srm_alert": False})
    m.record_drift({"reference_arm": "control", "score_psi": {"score": 0, "alert": False},
                    "loss_adwin": {"score": 0, "alert": False},
                    "label_ctr": {"score": 0, "alert": False}, "embedding": {}})
    m.record_drift_response()
    exported = generate_latest(m.registry).decode()
    for name in names:
        base = re.sub(r"_(bucket)$", "", name)
        assert base in exported or f"# TYPE {base}" in exported, name


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_recording_rule_ctr_is_exact_across_a_real_worker_restart(stack, uid, tmp_path,
                                                                  tiny_bert_dir):
    """A real ``freshrec run`` scraped by a real Prometheus, stopped and started again.

    The events' own clicks and impressions per arm are the truth; the recording rule over
    both lives of the worker must give their ratio within 1%.
    """
    import os
    import signal
    import sys

    from consumers.kafka_source import KafkaEventProducer
    from tests.helpers import wait_for
    from tests.integration.test_worker_e2e import overrides
    from worker.tools.synthetic import encode, traffic

    port = free_port()
    ov = overrides(stack, uid, tmp_path, tiny_bert_dir)
    ov["metrics"] = {"port": port}
    sets = [f"--set={sec}.{k}={json.dumps(v)}" for sec, d in ov.items() for k, v in d.items()]
    events = list(traffic(900, seed=11, arms=("control", "fresh")))
    truth: Counter[tuple[str, str]] = Counter((e["arm"], e["type"]) for e in events)
    first, second = events[:1300], events[1300:]
    producer = KafkaEventProducer({"bootstrap_servers": [stack.bootstrap]})

    def send(batch):
        for e in batch:
            producer.emit(f"{uid}.events", e["user_id"].encode(), encode(e))
        producer.flush()

    def start():
        return subprocess.Popen([sys.executable, "-m", "worker.tools.cli", "run", *sets],
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def scraped(kind: str) -> float:
        got = prom_query(prom_port, f"sum(freshrec_arm_{kind}_total)")
        return float(got[0]["value"][1]) if got else -1.0

    server, prom_port = start_prometheus(tmp_path, port)
    proc = start()
    try:
        wait_for(lambda: scraped("impressions") == 0.0, 120, what="the worker scraped at zero")
        send(first)
        n_first = sum(1 for e in first if e["type"] == "impression")
        wait_for(lambda: scraped("impressions") == n_first, 90, what="the first half scraped")
        proc.send_signal(signal.SIGTERM)  # a clean stop: checkpoint, commit, exit
        assert proc.wait(90) == 0
        proc = start()
        wait_for(lambda: scraped("impressions") == 0.0, 120, what="the restart scraped at zero")
        send(second)
        n_second = sum(1 for e in second if e["type"] == "impression")
        wait_for(lambda: scraped("impressions") == n_second, 90, what="the second half scraped")
        time.sleep(2.5)  # one more scrape and rule evaluation at rest
        got = {r["metric"]["arm"]: float(r["value"][1])
               for r in prom_query(prom_port, "freshrec:arm_ctr:rate5m")}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        producer.close()
        server.stop()
    for arm in ("control", "fresh"):
        want = truth[(arm, "click")] / truth[(arm, "impression")]
        assert got[arm] == pytest.approx(want, rel=0.01), (arm, got, want)
