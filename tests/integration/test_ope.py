"""``freshrec ope`` on the real stack: events read back from the broker, versions from Redis.

An app ranks through the serving rules on a real Redis (the control arm explores with
epsilon-greedy, the fresh arm is greedy) and logs its requests to the real broker; the
command estimates the fresh arm's CTR from the control arm's requests, from the topic and
from an exported file alike.
"""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from consumers.kafka_source import ensure_topics
from model_store.base import VersionInfo
from tests.integration.ingest_helpers import produce
from worker.config import ArmSettings, load_settings
from worker.runtime.app import vector_store
from worker.serving.service import RankService
from worker.tools.cli import main as cli_main

pytestmark = pytest.mark.integration

DIM = 4
ITEMS = [f"item-{k}" for k in range(20)]


def _publish(store, arm: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(ITEMS), DIM + 1)).astype(np.float32)
    info = VersionInfo(version=f"{arm}-1", dim=DIM + 1, item_count=len(ITEMS),
                       created_at="2026-01-01T00:00:00Z",
                       user_prior=rng.normal(size=DIM).astype("<f4").tobytes())
    store.publish(arm, f"{arm}-1", ITEMS, vectors, info)


def test_ope_estimates_the_fresh_arm_from_the_control_arms_logs(stack, uid, tmp_path, capsys):
    topic = f"{uid}.events"
    flags = ["--bootstrap-servers", stack.bootstrap, "--redis-url", stack.redis_url,
             "--set", f"redis.prefix={uid}", "--set", f"kafka.events_topic={topic}"]
    store = vector_store(load_settings(None, {"redis": {"url": stack.redis_url,
                                                        "prefix": uid}}))
    _publish(store, "control", 1)
    _publish(store, "fresh", 2)
    arms = [ArmSettings(name="control", lineage="frozen", policy="epsilon", epsilon=0.5),
            ArmSettings(name="fresh")]
    service = RankService(store, arms, seed=3)
    rng, enc = np.random.default_rng(4), msgspec.json.Encoder()
    true_ctr = dict(zip(ITEMS, rng.uniform(0.05, 0.5, size=len(ITEMS)), strict=True))
    lines: list[bytes] = []
    for r in range(600):
        user = f"user-{r % 97}"
        candidates = sorted(rng.choice(ITEMS, size=10, replace=False).tolist())
        slate = service.rank(user, [], candidates, 3, request_id=f"req-{r}")
        for pos, (item, prop) in enumerate(zip(slate.items, slate.propensities, strict=True)):
            base = {"ts": 1_700_000_000_000 + r, "user_id": user, "item_id": item,
                    "request_id": slate.request_id, "arm": slate.arm, "position": pos,
                    "propensity": prop, "model_version": slate.version or ""}
            context = {"candidates": candidates, "history": []} if pos == 0 else {}
            lines.append(enc.encode({**base, **context, "event_id": f"i{r}-{pos}",
                                     "type": "impression"}))
            if rng.random() < true_ctr[item]:
                lines.append(enc.encode({**base, "event_id": f"c{r}-{pos}", "type": "click"}))
    opts = {"bootstrap_servers": [stack.bootstrap]}
    ensure_topics(opts, {topic: 2})
    produce(opts, topic, [(None, v) for v in lines])
    control_requests = sum(1 for v in lines if b'"candidates"' in v and b'"control"' in v)

    assert cli_main(["ope", *flags, "--arm", "fresh", "--logged-arm", "control",
                     "--slots", "1"]) == 0
    from_topic = json.loads(capsys.readouterr().out)
    assert from_topic["target"] == {"arm": "fresh", "version": "fresh-1", "policy": "greedy",
                                    "logged_arm": "control"}
    assert from_topic["decisions"] == control_requests
    assert from_topic["skipped"] == {"other_arm": 600 - control_requests}
    for name in ("ips", "snips", "dr", "dm", "logged_ctr"):
        e = from_topic[name]
        assert e["low"] <= e["value"] <= e["high"]
    assert from_topic["effective_sample_size"] > 0

    exported = tmp_path / "events.jsonl"
    exported.write_bytes(b"\n".join(lines) + b"\n")
    assert cli_main(["ope", *flags, "--arm", "fresh", "--logged-arm", "control", "--slots",
                     "1", "--events-file", str(exported)]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_file == from_topic

    assert cli_main(["ope", *flags, "--arm", "fresh", "--version", "fresh-9",
                     "--events-file", str(exported)]) == 2
    err = capsys.readouterr().err
    assert "does not retain version 'fresh-9'" in err and "fresh-1" in err
