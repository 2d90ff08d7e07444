"""The serving rules and the HTTP API over the in-memory store (pure logic, no Redis)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_store.base import StoreUnavailable, VersionInfo
from model_store.counters import MemoryCounters
from model_store.memory_store import MemoryVectorStore
from worker.config import ArmSettings, ServeSettings, load_settings
from worker.experiments.arms import assign_arm
from worker.experiments.explore import EpsilonGreedy, Thompson
from worker.serving.cache import CachedVectors
from worker.serving.http import create_app
from worker.serving.ranker import Ranker
from worker.serving.service import RankService

IDS = [f"item-{i:03d}" for i in range(200)]


def published(dim: int = 4, arms=("control", "fresh")) -> MemoryVectorStore:
    store = MemoryVectorStore()
    rng = np.random.default_rng(0)
    for arm in arms:
        vecs = rng.normal(size=(len(IDS), dim + 1)).astype(np.float32)
        store.publish(arm, f"{arm}-00000001", IDS, vecs,
                      VersionInfo(f"{arm}-00000001", dim + 1, len(IDS), "t",
                                  user_prior=np.full(dim, 0.1, "<f4").tobytes()))
    return store


# The documented arm-assignment rule (docs/contracts/http.md), reimplemented from its text
# alone, and its test vectors.
@pytest.mark.parametrize(("user", "point", "arm"), [
    ("user-00000", 0.8978871728025515, "fresh"),
    ("user-00001", 0.02694550238644589, "control"),
    ("user-42", 0.7729474416899412, "fresh"),
    ("üser-ß", 0.2287488415609922, "control"),
])
def test_arm_assignment_matches_the_readme_rule_and_test_vectors(user, point, arm):
    digest = hashlib.sha256(f"freshrec:{user}".encode()).digest()
    assert int.from_bytes(digest[:8], "big") / 2**64 == pytest.approx(point, abs=1e-15)
    arms = load_settings().experiment.arms
    assert assign_arm(user, arms) == arm
    three = [ArmSettings(name="a", share=0.2), ArmSettings(name="b", share=0.3),
             ArmSettings(name="c", share=0.5)]
    # shares are cumulative in config order over their sum: [0, .2) a, [.2, .5) b, [.5, 1) c
    want = "a" if point < 0.2 else "b" if point < 0.5 else "c"
    assert assign_arm(user, three) == want


def test_epsilon_propensities_are_exact_per_slot():
    scores = np.array([3.0, 2.0, 1.0, 0.0])
    pol = EpsilonGreedy(0.4, np.random.default_rng(1))
    seen: dict[tuple[int, ...], int] = {}
    props: dict[tuple[int, ...], float] = {}
    n = 20_000
    for _ in range(n):
        order, p = pol.choose(scores, np.zeros(4), np.zeros(4), 2)
        seen[tuple(order)] = seen.get(tuple(order), 0) + 1
        props[tuple(order)] = float(np.prod(p))
    # the slate's probability is the product of the per-slot propensities
    assert sum(props.values()) == pytest.approx(1.0, abs=1e-9)
    for slate, count in seen.items():
        assert count / n == pytest.approx(props[slate], abs=0.012)


def test_thompson_propensities_estimate_the_first_slot_probability():
    scores = np.array([0.5, 0.0, -0.5])
    imps, clicks = np.array([50.0, 5.0, 0.0]), np.array([10.0, 1.0, 0.0])
    pol = Thompson(rng=np.random.default_rng(2), propensity_draws=4000)
    firsts = np.zeros(3)
    est = np.zeros(3)
    for _ in range(300):
        order, p = pol.choose(scores, imps, clicks, 1)
        firsts[order[0]] += 1
        est[order[0]] += p[0]
    freq = firsts / firsts.sum()
    mean_est = np.divide(est, firsts, out=np.zeros(3), where=firsts > 0)
    for k in range(3):
        if firsts[k] >= 30:
            assert mean_est[k] == pytest.approx(freq[k], abs=0.1)
    assert (mean_est[firsts > 0] > 0).all()  # the draw that ranked counts: never 0


def test_rank_service_scores_like_the_ranker_and_stamps_what_the_app_needs():
    store = published()
    arms = load_settings().experiment.arms
    svc = RankService(store, arms)
    slate = svc.rank("user-42", IDS[:3], IDS[10:60], k=5)
    assert slate.arm == assign_arm("user-42", arms)
    assert slate.version == f"{slate.arm}-00000001"
    _, order, scores = Ranker(store).rank(IDS[:3], IDS[10:60], slate.arm)
    assert slate.items == order[:5]
    assert slate.scores == pytest.approx(scores[:5].tolist())
    assert slate.propensities == [1.0] * 5 and len(slate.request_id) == 32
    assert svc.rank("user-42", [], IDS[:5], arm="control", request_id="r1").arm == "control"


def client(store=None, **cfg) -> TestClient:
    settings = load_settings()
    svc = RankService(store or published(), settings.experiment.arms, stats=MemoryCounters())
    return TestClient(create_app(svc, ServeSettings(**cfg)), raise_server_exceptions=False)


def test_lookup_returns_one_version_nulls_for_unknown_ids_and_the_version_header():
    c = client()
    got = c.get("/v1/arms/fresh/vectors", params=[("ids", IDS[3]), ("ids", "missing")])
    assert got.status_code == 200
    body = got.json()
    assert body["version"] == "fresh-00000001" == got.headers["x-freshrec-version"]
    assert body["dim"] == 5 and len(body["vectors"][IDS[3]]) == 5
    assert body["vectors"]["missing"] is None


@pytest.mark.parametrize(("method", "path", "kwargs", "code", "says"), [
    ("get", "/v1/arms/nope/vectors", {"params": {"ids": "a"}}, 404, "unknown arm"),
    ("get", "/v1/arms/fresh/vectors", {}, 422, "ids"),
    ("get", "/v1/arms/fresh/vectors", {"params": [("ids", "x")] * 11}, 422, "ids"),
    ("post", "/v1/rank", {"content": b"{not json", "headers": {"content-type":
                                                               "application/json"}}, 422, "JSON"),
    ("post", "/v1/rank", {"json": {"user_id": "u", "candidates": []}}, 422, "candidates"),
    ("post", "/v1/rank", {"json": {"user_id": "u", "candidates": ["a"], "arm": "zz"}}, 404,
     "unknown arm"),
    ("post", "/v1/rank", {"json": {"user_id": "u", "candidates": ["a"], "extra": 1}}, 422,
     "extra"),
    ("post", "/v1/rank", {"json": {"user_id": "u", "candidates": ["a"] * 12}}, 422,
     "candidates"),
    ("post", "/v1/rank", {"content": b"[" * 5000, "headers": {"content-type":
                                                              "application/json"}}, 413, "body"),
])
def test_bad_requests_get_a_4xx_with_a_reason(method, path, kwargs, code, says):
    c = client(max_ids=10, max_candidates=10, max_body_bytes=4096)
    got = getattr(c, method)(path, **kwargs)
    assert got.status_code == code, got.text
    assert says.lower() in got.json()["detail"].lower()


def test_store_outage_is_503_and_the_next_request_recovers():
    store = published()
    c = client(store)
    real = store.lookup
    store.lookup = lambda *a: (_ for _ in ()).throw(StoreUnavailable("down"))  # type: ignore
    got = c.post("/v1/rank", json={"user_id": "u", "candidates": IDS[:5]})
    assert got.status_code == 503 and got.headers["retry-after"] == "1"
    store.lookup = real  # type: ignore[method-assign]
    assert c.post("/v1/rank", json={"user_id": "u", "candidates": IDS[:5]}).status_code == 200
    text = c.get("/metrics").text
    assert 'freshrec_serve_responses_total{code="503",route="/v1/rank"} 1.0' in text
    assert 'freshrec_serve_version{arm=' in text


def test_rank_answer_carries_arm_version_policy_and_propensities():
    store = published()
    settings = load_settings(None, {"experiment": {"arms": [
        {"name": "control", "lineage": "frozen", "share": 0.5, "policy": "epsilon",
         "epsilon": 0.2},
        {"name": "fresh", "share": 0.5, "policy": "thompson"}]}})
    svc = RankService(store, settings.experiment.arms, stats=MemoryCounters())
    c = TestClient(create_app(svc, ServeSettings()))
    for arm, policy in (("control", "epsilon"), ("fresh", "thompson")):
        body = c.post("/v1/rank", json={"user_id": "u", "candidates": IDS[:30], "k": 4,
                                        "arm": arm}).json()
        assert body["arm"] == arm and body["policy"] == policy
        assert body["model_version"] == f"{arm}-00000001"
        assert len(body["items"]) == 4
        assert all(0 < it["propensity"] <= 1 for it in body["items"])


def test_cached_vectors_answer_from_one_version_and_see_a_flip_within_the_max_age():
    store = MemoryVectorStore(retention=3)
    ids = [f"i{k}" for k in range(6)]
    store.publish("a", "v1", ids, np.full((6, 3), 1.0, np.float32), VersionInfo("v1", 3, 6, "t"))
    calls = []
    real = store.lookup
    store.lookup = lambda arm, want: calls.append(list(want)) or real(arm, want)
    now = [0.0]
    cached = CachedVectors(store, max_age_s=0.5, max_rows=4, clock=lambda: now[0])
    version, vecs, found = cached.lookup("a", ["i0", "nope", "i1"])
    assert version == "v1" and found.tolist() == [True, False, True] and np.isnan(vecs[1]).all()
    assert cached.lookup("a", ["i1", "nope"])[2].tolist() == [True, False]  # both remembered
    assert len(calls) == 1
    store.publish("a", "v2", ids, np.full((6, 3), 2.0, np.float32), VersionInfo("v2", 3, 6, "t"))
    now[0] = 0.4
    assert cached.lookup("a", ["i0"])[0] == "v1" and len(calls) == 1  # within the max age
    # i5 unseen: read with the pointer, which moved, so both are read again from v2.
    assert cached.lookup("a", ["i0", "i5"])[1][:, 0].tolist() == [2.0, 2.0]
    assert calls[1:] == [["i5"], ["i0", "i5"]]
    now[0] = 1.0
    version, vecs, _ = cached.lookup("a", ["i0", "i1", "i2", "i3", "i4"])  # over max_rows
    assert version == "v2" and (vecs == 2.0).all() and len(calls) == 4
    assert cached.lookup("a", ["i4"])[0] == "v2" and len(calls) == 4


def test_cached_vectors_read_only_the_ids_they_have_not_seen():
    store = MemoryVectorStore(retention=3)
    ids = [f"i{k}" for k in range(6)]
    vecs = np.arange(18, dtype=np.float32).reshape(6, 3)
    store.publish("a", "v1", ids, vecs, VersionInfo("v1", 3, 6, "t"))
    calls = []
    real = store.lookup
    store.lookup = lambda arm, want: calls.append(list(want)) or real(arm, want)
    now = [0.0]
    cached = CachedVectors(store, max_age_s=0.5, clock=lambda: now[0])
    cached.lookup("a", ["i0", "i1"])
    version, got, found = cached.lookup("a", ["i1", "i2", "nope", "i0"])
    assert calls == [["i0", "i1"], ["i2", "nope"]]
    assert version == "v1" and found.tolist() == [True, True, False, True]
    assert got[[0, 1, 3]].tolist() == vecs[[1, 2, 0]].tolist()
    assert (cached.ids_hit, cached.ids_read) == (2, 4)
    now[0] = 1.0  # pointer due: read with every id, in one round trip
    assert cached.lookup("a", ["i2", "i0"])[0] == "v1" and calls[-1] == ["i2", "i0"]


@pytest.mark.parametrize("cached", [False, True])
def test_lookup_json_is_exact_float32_whether_assembled_from_cached_rows_or_not(cached):
    store = published()
    reader = CachedVectors(store) if cached else store
    svc = RankService(reader, load_settings().experiment.arms)
    c = TestClient(create_app(svc, ServeSettings()), raise_server_exceptions=False)
    ids = [IDS[7], "missing", IDS[3], IDS[7], 'q"uote\\']
    for _ in range(2):  # the second answer comes from the cache when there is one
        body = c.get("/v1/arms/fresh/vectors", params=[("ids", i) for i in ids]).json()
        assert list(body["vectors"]) == [IDS[7], "missing", IDS[3], 'q"uote\\']  # each once
        _, want, _ = store.lookup("fresh", [IDS[7], IDS[3]])
        got = np.array([body["vectors"][IDS[7]], body["vectors"][IDS[3]]], np.float32)
        np.testing.assert_array_equal(got, want)  # shortest float32 text parses back exactly
        assert body["vectors"]["missing"] is None and body["vectors"]['q"uote\\'] is None


def test_a_configured_token_guards_the_api_but_not_probes_or_metrics(tmp_path):
    c = client(api_token="s3cret")  # noqa: S106 - a test token
    ask = ("/v1/arms/fresh/vectors", {"params": {"ids": IDS[0]}})
    missing = c.get(ask[0], **ask[1])
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in missing.json()["detail"]
    wrong = c.get(ask[0], **ask[1], headers={"Authorization": "Bearer s3cre"})
    assert wrong.status_code == 401
    ok = c.get(ask[0], **ask[1], headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    rank = c.post("/v1/rank", json={"user_id": "u", "candidates": IDS[:5]})
    assert rank.status_code == 401
    assert c.get("/openapi.json").status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert c.get(open_path).status_code == 200
    assert 'code="401",route="/v1/arms/{arm}/vectors"} 2.0' in c.get("/metrics").text
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    c = client(api_token_file=str(secret))
    assert c.get(ask[0], **ask[1], headers={"Authorization": "Bearer from-a-file"}
                 ).status_code == 200
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        client(api_token_file=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="No such file"):
        client(api_token_file=str(tmp_path / "absent"))
