"""``freshrec ope``: the CTR a candidate would get, estimated from logs already collected.

Reads the behaviour events (the events topic, or an exported file of one JSON event per
line), rebuilds every logged request (the shown slate with its propensities, the clicks,
the candidates the serving policy chose among and the user's history), scores the
candidates with the target (a retained version of an arm, served exactly as ``freshrec
serve`` would score it) and hands the slot-by-slot probabilities to the estimators of
:mod:`worker.experiments.ope`. Requests it cannot rebuild are counted by reason, never
silently dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from model_store.base import VectorStore, VersionInfo
from worker.config import Settings
from worker.experiments.ope import POLICIES, Estimate, SlotLog, estimate, slot_probabilities
from worker.serving.ranker import Ranker
from worker.tools.overrides import UsageError, add_common, settings_from_args

__all__ = ["Decision", "PinnedVersion", "add_ope_command", "evaluate", "read_decisions"]

#: Below this many requests' worth of weight, the normal intervals are not to be trusted
#: (seen on the closed loop: with an effective sample of 3-4, intervals missed the truth).
MIN_EFFECTIVE_SAMPLE = 100


@dataclass
class Decision:
    """One logged request: what was shown, how likely, what was clicked, and its context."""

    request_id: str
    user_id: str
    arm: str
    ts: int
    shown: dict[int, tuple[str, float]] = field(default_factory=dict)  # position -> item
    candidates: list[str] | None = None
    history: list[str] | None = None
    clicked: set[str] = field(default_factory=set)


Click = tuple[int, str, str]  # (ts, user, item)


def read_decisions(events: Iterable[bytes | str]
                   ) -> tuple[list[Decision], list[Click], Counter[str]]:
    """(decisions in time order, clicks as (ts, user, item), lines skipped by reason)."""
    decode = msgspec.json.Decoder()
    decisions: dict[str, Decision] = {}
    clicks: list[Click] = []
    skipped: Counter[str] = Counter()
    for raw in events:
        if not raw.strip():
            continue
        try:
            ev = decode.decode(raw)
            etype, request, user, item = ev["type"], ev["request_id"], ev["user_id"], ev["item_id"]
            ts, position = int(ev["ts"]), ev.get("position", 0)
            propensity = float(ev.get("propensity", 1.0))
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            skipped["unreadable"] += 1
            continue
        if etype not in ("click", "impression") or type(position) is not int:
            continue
        d = decisions.get(request)
        if d is None:
            d = decisions[request] = Decision(request, user, "", ts)
        if etype == "click":
            clicks.append((ts, user, item))
            d.clicked.add(item)
            continue
        # A request's time is its impressions' (its click may be read first).
        d.ts = min(d.ts, ts) if d.shown else ts
        d.arm = str(ev.get("arm", ""))
        d.shown[position] = (item, propensity)
        if position == 0:
            d.candidates, d.history = ev.get("candidates"), ev.get("history")
    out = [d for d in decisions.values() if d.shown]  # else: clicks of requests before the log
    clicks.sort()
    return sorted(out, key=lambda d: (d.ts, d.request_id)), clicks, skipped


class PinnedVersion:
    """One retained version of one arm, read through the serving interfaces."""

    def __init__(self, info: VersionInfo, ids: Sequence[str], vectors: np.ndarray) -> None:
        self._info, self.vectors = info, vectors
        self.index = {item: k for k, item in enumerate(ids)}

    @property
    def version(self) -> str:
        """The version this reader serves."""
        return self._info.version

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """This version's rows (zeros where an id has none)."""
        rows = np.array([self.index.get(i, -1) for i in ids], np.int64)
        found = rows >= 0
        vecs = np.zeros((len(ids), self.vectors.shape[1]), np.float32)
        vecs[found] = self.vectors[rows[found]]
        return self._info.version, vecs, found

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """This version's metadata (its user tower)."""
        return self._info if version == self._info.version else None


def load_target(store: VectorStore, arm: str, version: str | None) -> PinnedVersion:
    """The arm's ``version`` (its current one when None) as a :class:`PinnedVersion`."""
    if version is None:
        current = store.current(arm)
        if current is None:
            raise UsageError(f"arm {arm!r} has no published version to evaluate")
        version = current.version
    info = store.info(arm, version)
    if info is None:
        raise UsageError(f"arm {arm!r} does not retain version {version!r}; "
                         f"retained: {store.versions(arm)}")
    ids, vectors = store.version_vectors(arm, version)
    return PinnedVersion(info, ids, vectors)


def evaluate(decisions: Sequence[Decision], clicks: Sequence[Click],
             target: PinnedVersion, policy: str, *, epsilon: float = 0.1,
             logged_arm: str | None = None, history_len: int = 10, slots: int | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Estimate the target's CTR over the logged requests (``logged_arm``'s, or all).

    A request's history is the one logged with it, else the user's clicks before it in
    this log (newest first); UCB's and Thompson's item counts are those of the log before
    the request.
    """
    ranker, rng = Ranker(target), np.random.default_rng(seed)
    skipped: Counter[str] = Counter()
    rows: list[tuple[np.ndarray, ...]] = []
    imps: Counter[str] = Counter()
    clicked: Counter[str] = Counter()
    past: dict[str, deque[str]] = defaultdict(lambda: deque(maxlen=history_len))
    k_clicks = 0
    for d in decisions:
        while k_clicks < len(clicks) and clicks[k_clicks][0] < d.ts:
            _, user, item = clicks[k_clicks]
            past[user].appendleft(item)
            k_clicks += 1
        reason = _unusable(d, logged_arm, slots)
        if reason is None:
            rows.append(_one(d, ranker, policy, epsilon, past, imps, clicked, slots, rng))
        else:
            skipped[reason] += 1
        for item, _ in d.shown.values():
            imps[item] += 1
        for item in d.clicked:
            clicked[item] += 1
    if not rows:
        raise UsageError(f"no logged request could be evaluated (skipped: {dict(skipped)})")
    width = min(len(r[0]) for r in rows)
    log = SlotLog(*(np.stack([r[i][:width] for r in rows]) for i in range(5)))
    out = estimate(log)
    result = {k: (_as_dict(v) if isinstance(v, Estimate) else v) for k, v in out.items()}
    result["slots"], result["skipped"] = width, dict(skipped)
    if out["effective_sample_size"] < MIN_EFFECTIVE_SAMPLE:  # type: ignore[operator]
        result["warning"] = (
            f"effective sample size {out['effective_sample_size']:.0f} is below "
            f"{MIN_EFFECTIVE_SAMPLE}: the weights are too heavy-tailed for the normal "
            "intervals to hold; evaluate fewer --slots or log with more exploration")
    return result


def _unusable(d: Decision, logged_arm: str | None, slots: int | None) -> str | None:
    if logged_arm is not None and d.arm != logged_arm:
        return "other_arm"
    if sorted(d.shown) != list(range(len(d.shown))):
        return "missing_positions"
    if d.candidates is None or not isinstance(d.candidates, list):
        return "no_candidates"
    if slots is not None and len(d.shown) < slots:
        return "short_slate"
    index = set(d.candidates)
    if any(item not in index for item, _ in d.shown.values()):
        return "shown_not_a_candidate"
    return None


def _one(d: Decision, ranker: Ranker, policy: str, epsilon: float,
         past: dict[str, deque[str]], imps: Counter[str], clicked: Counter[str],
         slots: int | None, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    cands = list(dict.fromkeys(d.candidates or []))
    where = {item: k for k, item in enumerate(cands)}
    k = len(d.shown) if slots is None else slots
    shown = [d.shown[j] for j in range(k)]
    history = d.history if d.history is not None else list(past[d.user_id])
    _, scores = ranker.scores(history, cands, "")
    logged = [where[item] for item, _ in shown]
    target, r_hat, dm = slot_probabilities(
        policy, scores, logged, epsilon=epsilon, rng=rng,
        imps=np.array([imps[c] for c in cands], float),
        clicks=np.array([clicked[c] for c in cands], float))
    logged_prob = np.array([p for _, p in shown])
    reward = np.array([1.0 if item in d.clicked else 0.0 for item, _ in shown])
    return target, logged_prob, reward, r_hat, dm


def _as_dict(e: Estimate) -> dict[str, float]:
    return {"value": round(e.value, 6), "low": round(e.low, 6), "high": round(e.high, 6),
            "se": round(e.se, 6)}


def _read_lines(settings: Settings, path: str | None) -> Iterable[bytes]:
    if path is not None:
        try:
            return Path(path).read_bytes().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read --events-file {path}: {exc.strerror}") from exc
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    from consumers.log_end import exact_ends, read_to_end  # noqa: PLC0415

    topic = settings.kafka.events_topic
    reader = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False)
    lines: list[bytes] = []
    try:
        partitions = reader.partitions_for_topic(topic)
        if not partitions:
            raise UsageError(f"the events topic {topic!r} does not exist on the broker")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = exact_ends(reader, tps)
        read_to_end(reader, dict.fromkeys(ends, 0), lambda rec: lines.append(rec.value),
                    ends=ends)
    finally:
        reader.close()
    return lines


def cmd_ope(args: argparse.Namespace) -> int:
    """Estimate a candidate's CTR from the logged events; print the estimates as JSON."""
    from worker.runtime.app import vector_store  # noqa: PLC0415

    settings = settings_from_args(args)
    target = load_target(vector_store(settings), args.arm, args.version)
    decisions, clicks, unreadable = read_decisions(_read_lines(settings, args.events_file))
    result = evaluate(decisions, clicks, target, args.policy, epsilon=args.epsilon,
                      logged_arm=args.logged_arm, history_len=settings.ingest.history_len,
                      slots=args.slots, seed=args.seed)
    result["skipped"] = dict(Counter(result["skipped"]) + unreadable)
    head = {"arm": args.arm, "version": target.version, "policy": args.policy,
            "logged_arm": args.logged_arm}
    print(json.dumps({"target": head, **result}, indent=2), file=sys.stdout)
    return 0


def add_ope_command(sub: Any) -> None:
    """Register ``freshrec ope`` on the ``freshrec`` sub-parsers."""
    ope = sub.add_parser("ope", help="off-policy evaluation: a candidate's CTR from the logs")
    add_common(ope)
    ope.add_argument("--arm", required=True, help="the arm whose version is the candidate")
    ope.add_argument("--version", help="a retained version of the arm (default: its current)")
    ope.add_argument("--policy", choices=POLICIES, default="greedy",
                     help="the serving policy the candidate would run")
    ope.add_argument("--epsilon", type=float, default=0.1, help="for --policy epsilon")
    ope.add_argument("--logged-arm", help="evaluate on this arm's requests only "
                     "(default: every logged request)")
    ope.add_argument("--events-file", help="exported events, one JSON per line "
                     "(default: read the events topic from its start to its end)")
    ope.add_argument("--slots", type=int, help="evaluate the top SLOTS positions only")
    ope.add_argument("--seed", type=int, default=0, help="seeds Thompson's posterior draws")
    ope.set_defaults(fn=cmd_ope)
