"""Guarded ramps on the real stack: a harmful arm is stopped, a good one ramps to its target.

A worker (``build_app``, role all) reads the events from the real broker and judges the
ramps on the counters in the real Redis; the "app" assigns each request's user through the
serving rule (:class:`RankService` with the live shares read from Redis), so users move
to an arm only as its ramp advances, and clicks follow each arm's true CTR.
"""

from __future__ import annotations

import json
import random
import time

import msgspec
import pytest

from tests.integration.ingest_helpers import drain, produce
from worker.config import ArmSettings, load_settings
from worker.experiments.ramp import LiveShares
from worker.learning.encoder import TextEncoder
from worker.runtime.app import build_app, ramp_controller
from worker.serving.service import RankService
from worker.tools.cli import main as cli_main

pytestmark = pytest.mark.integration

CTR = {"control": 0.10, "good": 0.12, "bad": 0.04}


def settings_for(stack, uid, tmp_path, tiny_bert_dir):
    arms = [ArmSettings(name="control", lineage="frozen", share=0.4),
            ArmSettings(name="good", share=0.3, ramp=(0.1, 0.3)),
            ArmSettings(name="bad", share=0.3, ramp=(0.1, 0.3))]
    return load_settings(None, {
        "kafka": {"bootstrap_servers": stack.bootstrap, "group_id": uid,
                  "events_topic": f"{uid}.events", "items_topic": f"{uid}.items",
                  "dlq_topic": f"{uid}.dlq", "partitions": 2},
        "redis": {"url": stack.redis_url, "prefix": uid},
        "model": {"encoder_path": tiny_bert_dir, "dim": 8},
        "training": {"cycle_interval_s": 3600.0},  # statistics only: no training cycles
        "store": {"checkpoint_dir": str(tmp_path / "ckpt")},
        "metrics": {"port": 0},
        "experiment": {"arms": [a.model_dump() for a in arms], "user_buckets": 128,
                       "ramp_min_impressions": 800, "sequential_burn_in": 300,
                       "stats_interval_s": 3600.0},
    })


def test_harmful_arm_is_stopped_and_good_arm_completes_its_ramp(
        stack, uid, tmp_path, tiny_bert_dir, capsys):
    settings = settings_for(stack, uid, tmp_path, tiny_bert_dir)
    app = build_app(settings, encoder=TextEncoder(tiny_bert_dir))
    service = RankService(app.store, settings.experiment.arms, settings.experiment.salt,
                          control="control",
                          shares=LiveShares(ramp_controller(settings), max_age_s=0.0))
    rng, enc = random.Random(3), msgspec.json.Encoder()
    ts = int(time.time() * 1000) - 3_600_000
    opts = settings.kafka.client_options()
    seen_shares = []
    try:
        for rnd in range(60):
            batch = []
            for r in range(400):
                user = f"user-{rng.randrange(5000)}"
                arm = service.arm_for(user)
                req = f"r{rnd}-{r}"
                for pos in range(4):
                    base = {"ts": ts, "user_id": user, "item_id": f"item-{rng.randrange(300)}",
                            "request_id": req, "arm": arm, "position": pos}
                    batch.append((user.encode(), enc.encode(
                        {**base, "event_id": f"{req}-i{pos}", "type": "impression"})))
                    if rng.random() < CTR[arm]:
                        batch.append((user.encode(), enc.encode(
                            {**base, "event_id": f"{req}-c{pos}", "type": "click",
                             "ts": ts + 500})))
                ts += 5
            drain(app.worker, produce(opts, settings.kafka.events_topic, batch))
            app.worker.checkpoint()  # the arm counters reach Redis after a checkpoint
            stats = app.worker.refresh_statistics()
            ramps = stats["ramps"]
            seen_shares.append((ramps["good"]["share"], ramps["bad"]["share"]))
            if ramps["bad"]["stopped"] and ramps["good"]["step"] == 1 and rnd > 10:
                break
    finally:
        app.close()
    assert ramps["bad"]["stopped"] and ramps["bad"]["share"] == 0.0
    assert "CTR lower than control" in ramps["bad"]["reason"]
    assert ramps["good"] == {"step": 1, "share": pytest.approx(0.3), "stopped": False,
                             "held": False, "reason": ""}
    assert seen_shares[0] == (pytest.approx(0.1), pytest.approx(0.1))
    reg = app.metrics.registry
    labels = {"experiment": settings.experiment.name}
    assert reg.get_sample_value("freshrec_experiment_ramp_actions_total",
                                {**labels, "arm": "bad", "action": "stop"}) == 1
    assert reg.get_sample_value("freshrec_experiment_ramp_stopped", {**labels, "arm": "bad"}) == 1
    assert reg.get_sample_value("freshrec_experiment_ramp_share", {**labels, "arm": "good"}) \
        == pytest.approx(0.3)
    assert stats["srm_alert"] is False
    # serving already sends the stopped arm's users to control
    assert all(service.arm_for(f"user-{u}") != "bad" for u in range(2000))
    # status shows why; a human releases the arm
    arms = json.dumps([a.model_dump() for a in settings.experiment.arms])
    base = ["--redis-url", stack.redis_url, "--set", f"redis.prefix={uid}",
            "--set", f"experiment.arms={arms}"]
    assert cli_main(["status", *base]) == 0
    status = json.loads(capsys.readouterr().out)["statistics"]
    assert status["ramps"]["bad"]["stopped"] and "lower" in status["ramps"]["bad"]["reason"]
    assert status["arms"]["bad"]["user"]["diff_high"] < 0
    assert cli_main(["ramp", "release", *base, "bad"]) == 0
    released = json.loads(capsys.readouterr().out)
    assert released == {"arm": "bad", "step": 0, "share": 0.1, "stopped": False}
    assert any(service.arm_for(f"user-{u}") == "bad" for u in range(2000))
    assert cli_main(["ramp", "release", *base, "control"]) == 2
    assert "has no ramp" in capsys.readouterr().err
