"""Off-policy estimators on synthetic logs whose true answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from worker.experiments.explore import EpsilonGreedy, Thompson
from worker.experiments.ope import SlotLog, estimate, slot_probabilities
from worker.tools.ope import PinnedVersion, evaluate, read_decisions

M, K = 6, 2  # candidates per request, slots shown


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def synthetic_log(seed: int, n: int, policy: str = "greedy", model_noise: float = 0.3
                  ) -> tuple[SlotLog, float]:
    """Logs of an epsilon-greedy logger on a poor model; the target is another policy on a
    better one. Clicks are independent per slot (the cascade assumption holds). Returns
    the log and the target's true CTR on these contexts (its exact expectation)."""
    rng = np.random.default_rng(seed)
    logger = EpsilonGreedy(0.5, np.random.default_rng(seed + 1))
    rows: list[tuple[np.ndarray, ...]] = []
    truth = []
    for _ in range(n):
        p = rng.beta(1.0, 4.0, size=M)
        logger_scores = _logit(p) + rng.normal(scale=1.5, size=M)
        target_scores = _logit(p) + rng.normal(scale=model_noise, size=M)
        order, props = logger.choose(logger_scores, np.zeros(M), np.zeros(M), K)
        reward = (rng.random(K) < p[order]).astype(float)
        target, r_hat, dm = slot_probabilities(policy, target_scores, order, epsilon=0.2)
        rows.append((target, props, reward, r_hat, dm))
        truth.append(_expected_ctr(policy, target_scores, p))
    log = SlotLog(*(np.stack([r[i] for r in rows]) for i in range(5)))
    return log, float(np.mean(truth))


def _expected_ctr(policy: str, scores: np.ndarray, p: np.ndarray) -> float:
    """The target's expected clicks per slot on one context, enumerated exactly."""
    best = list(np.argsort(-scores, kind="stable"))
    if policy == "greedy":
        return float(p[best[:K]].mean())
    # epsilon 0.2: enumerate both slots
    total = 0.0
    for a in range(M):
        pa = 0.8 * (a == best[0]) + 0.2 / M
        rest = [i for i in best if i != a]
        for b in rest:
            pb = 0.8 * (b == rest[0]) + 0.2 / (M - 1)
            total += pa * pb * (p[a] + p[b]) / 2
    return total


@pytest.mark.parametrize("policy", ["greedy", "epsilon"])
def test_ips_snips_and_dr_recover_another_policys_ctr_within_their_intervals(policy):
    covered = {"ips": 0, "snips": 0, "dr": 0}
    errors: dict[str, list[float]] = {k: [] for k in covered}
    ses: dict[str, list[float]] = {k: [] for k in covered}
    runs = 60
    for seed in range(runs):
        log, truth = synthetic_log(seed, 1500, policy)
        out = estimate(log)
        for name in covered:
            e = out[name]
            covered[name] += e.low <= truth <= e.high
            errors[name].append(e.value - truth)
            ses[name].append(e.se)
    for name, hits in covered.items():
        assert hits >= 0.8 * runs, (name, hits)  # nominal 95%
        bias = np.mean(errors[name])
        assert abs(bias) < 3 * np.std(errors[name]) / np.sqrt(runs), (name, bias)
    # A good model as the direct method: DR's variance is below IPS's (clicks' own noise,
    # which no model removes, is most of both).
    assert np.mean(ses["dr"]) < 0.9 * np.mean(ses["ips"])


def test_the_logged_policy_evaluated_on_its_own_logs_is_its_logged_ctr():
    rng = np.random.default_rng(3)
    reward = (rng.random((500, K)) < 0.3).astype(float)
    props = rng.uniform(0.1, 1.0, size=(500, K))
    log = SlotLog(props, props, reward, np.full_like(props, 0.3), np.full_like(props, 0.3))
    out = estimate(log)
    assert out["ips"].value == pytest.approx(reward.mean())
    assert out["snips"].value == pytest.approx(reward.mean())
    assert out["effective_sample_size"] == pytest.approx(500)


def test_slot_probabilities_are_the_policies_own():
    scores = np.array([2.0, 0.5, 1.0, -1.0])
    target, r_hat, dm = slot_probabilities("epsilon", scores, [0, 3], epsilon=0.2)
    assert target[0] == pytest.approx(0.8 + 0.2 / 4)  # the best
    assert target[1] == pytest.approx(0.2 / 3)  # not the best of the three left
    sig = 1 / (1 + np.exp(-scores))
    assert r_hat.tolist() == pytest.approx([sig[0], sig[3]])
    assert dm[1] == pytest.approx(0.8 * sig[2] + 0.2 * sig[[1, 2, 3]].mean())
    greedy, _, dm_g = slot_probabilities("greedy", scores, [2, 0])
    assert greedy.tolist() == [0.0, 1.0] and dm_g[0] == pytest.approx(sig[0])
    # Thompson: the probabilities of all candidates for a slot sum to 1, and match the
    # frequency with which the serving policy puts each first.
    counts = np.zeros(4)
    policy = Thompson(rng=np.random.default_rng(0))
    for _ in range(4000):
        order, _ = policy.choose(scores, np.zeros(4), np.zeros(4), 1)
        counts[order[0]] += 1
    probs = [slot_probabilities("thompson", scores, [i], draws=4000)[0][0] for i in range(4)]
    assert sum(probs) == pytest.approx(1.0)
    np.testing.assert_allclose(probs, counts / 4000, atol=0.03)
    with pytest.raises(ValueError, match="unknown policy"):
        slot_probabilities("nope", scores, [0])


def test_a_log_is_rebuilt_from_events_and_unusable_requests_are_counted():
    from model_store.base import VersionInfo  # noqa: PLC0415

    def imp(req: str, pos: int, item: str, prop: float, **extra: object) -> str:
        import json  # noqa: PLC0415

        return json.dumps({"type": "impression", "request_id": req, "user_id": "u1",
                           "item_id": item, "ts": 1000 + int(req[1:]), "arm": "control",
                           "position": pos, "propensity": prop, **extra})

    lines = [
        imp("r1", 0, "a", 0.5, candidates=["a", "b", "c"], history=[]),
        imp("r1", 1, "c", 0.5),
        '{"type": "click", "request_id": "r1", "user_id": "u1", "item_id": "a", "ts": 1500}',
        imp("r2", 0, "b", 0.5),  # no candidates logged
        imp("r3", 0, "z", 0.5, candidates=["a", "b"]),  # shown item not a candidate
        imp("r4", 1, "a", 0.5, candidates=["a", "b"]),  # position 0 missing
        "not json",
    ]
    decisions, clicks, unreadable = read_decisions(lines)
    assert [d.request_id for d in decisions] == ["r1", "r2", "r3", "r4"]
    assert unreadable == {"unreadable": 1} and clicks == [(1500, "u1", "a")]
    dim = 3
    vectors = np.eye(3, dtype=np.float32)
    info = VersionInfo(version="v1", dim=dim, item_count=3, created_at="",
                       user_prior=np.zeros(dim - 1, "<f4").tobytes())
    out = evaluate(decisions, clicks, PinnedVersion(info, ["a", "b", "c"], vectors), "epsilon",
                   epsilon=0.5)
    assert out["decisions"] == 1
    assert out["skipped"] == {"no_candidates": 1, "shown_not_a_candidate": 1,
                              "missing_positions": 1}
    assert out["logged_ctr"]["value"] == pytest.approx(0.5)
