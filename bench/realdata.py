"""Ranking quality on real data: MovieLens-100k replayed in time order, test-then-train.

    python -m bench.realdata [--cycle-every 500] [--limit N]

Each rating becomes a request: a slate of the rated item and 4 random items the user never
rated (seeded), at a random position; a rating >= 4 is a click on the rated item. The
events go through freshrec's real learning path in process (parse, dedupe, join, replay,
the trainer's cycles with the gate, publishes to a vector store), and the same outcomes
reach every peer in :mod:`bench.peers`. Just before a positive is learnt, every method
ranks all the items the user has not rated yet; hit@10, NDCG@10 and MRR, overall, on the
second half of the stream and on cold items (fewer than 5 earlier positives). freshrec is
scored exactly as ``freshrec serve`` scores: its published vectors of the current version
and the user vector the serving code builds from the user's recent positives. Prints a
table and the ratio of each freshrec arm to the best peer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from bench.movielens import Ratings, load
from bench.peers import ALSRefit, Peer, Popularity, RiverMF, SASRecRefit, Transitions
from bench.rankers import FreshrecArms
from bench.results import emit, parser, target
from worker.config import TrainingSettings

COLD = 5  # an item with fewer earlier positives is cold


@dataclass
class Tally:
    """Ranks of the targets, by segment."""

    ranks: dict[str, list[float]] = field(default_factory=lambda: {
        "all": [], "second_half": [], "cold": []})

    def add(self, rank: float, second_half: bool, cold: bool) -> None:
        """One target's rank, in each segment it belongs to."""
        self.ranks["all"].append(rank)
        if second_half:
            self.ranks["second_half"].append(rank)
        if cold:
            self.ranks["cold"].append(rank)

    def figures(self) -> dict[str, dict[str, float]]:
        """hit@10, NDCG@10, MRR and count per segment."""
        out = {}
        for seg, ranks in self.ranks.items():
            r = np.array(ranks, float)
            if not len(r):
                continue
            out[seg] = {"hit@10": round(float((r <= 10).mean()), 4),
                        "ndcg@10": round(float(np.where(r <= 10, 1 / np.log2(r + 1), 0).mean()),
                                         4),
                        "mrr": round(float((1 / r).mean()), 4), "n": len(r)}
        return out


def rank_of(scores: np.ndarray, candidates: np.ndarray, target: int) -> float:
    """1-based rank of ``target`` among ``candidates`` (ties: the expected rank)."""
    s = scores[candidates]
    mine = scores[target]
    return 1.0 + float((s > mine).sum()) + 0.5 * float((s == mine).sum() - 1)


@dataclass
class Query:
    """A positive about to be learnt: whom to rank for, among what, and the answer."""

    user: int
    history: np.ndarray
    candidates: np.ndarray
    target: int
    second_half: bool
    cold: bool


def peer_makers(data: Ratings, args: Any) -> dict[str, Callable[[], Peer]]:
    """Each peer by its ``--peers`` key, built on demand."""
    u, i = data.n_users, data.n_items
    return {
        "popularity": lambda: Popularity(u, i),
        "decayed": lambda: Popularity(u, i, half_life=2000),
        "transitions": lambda: Transitions(u, i, 3),
        "river": lambda: RiverMF(u, i, seed=args.seed),
        "als": lambda: ALSRefit(u, i, every=2000),
        "sasrec": lambda: SASRecRefit(u, i, every=5000, epochs=3 if args.smoke else 200,
                                      warm_epochs=3 if args.smoke else 20, seed=args.seed),
    }


def training_settings(pairs: list[str]) -> TrainingSettings:
    """The freshrec arms' training settings: the defaults, then ``KEY=VALUE`` overrides."""
    values: dict[str, Any] = {"cycle_interval_s": 0}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return TrainingSettings(**values)


def events_of(k: int, user: int, slate: list[int], item: int, clicked: bool, ts_ms: int,
              data: Ratings) -> list[bytes]:
    """The request's impressions (and click) as contract events."""
    base = {"user_id": f"u{user}", "request_id": f"r{k}", "arm": "fresh"}
    out = []
    for pos, it in enumerate(slate):
        out.append(msgspec.json.encode({**base, "event_id": f"r{k}-i{pos}", "type": "impression",
                                        "ts": ts_ms, "item_id": data.item_ids[it],
                                        "position": pos, "propensity": 1.0}))
    if clicked:
        pos = slate.index(item)
        out.append(msgspec.json.encode({**base, "event_id": f"r{k}-c", "type": "click",
                                        "ts": ts_ms + 1, "item_id": data.item_ids[item],
                                        "position": pos, "propensity": 1.0}))
    return out


def main() -> None:  # noqa: PLR0915 - one replay, read top to bottom
    ap = parser("bench.realdata", __doc__)
    ap.add_argument("--cycle-every", type=int, default=500,
                    help="positives between freshrec cycles (and batch-peer sync points)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N ratings (0: all)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-sasrec", action="store_true")
    ap.add_argument("--peers", default="popularity,decayed,transitions,river,als,sasrec",
                    help="comma-separated peers to run beside freshrec")
    ap.add_argument("--training", action="append", default=[], metavar="KEY=VALUE",
                    help="a [training] setting for freshrec's arms (repeatable)")
    args = ap.parse_args()
    if args.smoke:
        args.limit, args.cycle_every = 4000, 300
    data = load()
    print(f"data: {data.source}", flush=True)
    n = len(data.user) if not args.limit else min(args.limit, len(data.user))
    rng = np.random.default_rng(args.seed)
    rated = np.zeros((data.n_users, data.n_items), bool)  # rated by the end (slate negatives)
    rated[data.user, data.item] = True
    seen = np.zeros((data.n_users, data.n_items), bool)  # rated so far (excluded candidates)
    wanted = set(args.peers.split(","))
    if args.no_sasrec:
        wanted.discard("sasrec")
    peers: list[Peer] = [peer() for key, peer in peer_makers(data, args).items()
                         if key in wanted]
    arms = FreshrecArms(data, seed=args.seed, training=training_settings(args.training))
    batch = [p for p in peers if not p.online]
    tallies = {name: Tally() for name in [*arms.names, *(p.name for p in peers), "random"]}
    pending: list[Query] = []
    positives_seen = np.zeros(data.n_items, np.int32)
    histories: dict[int, list[int]] = {}
    positives = 0
    start = time.perf_counter()

    def sync() -> None:
        if pending:
            users = np.array([q.user for q in pending])
            hists = [q.history for q in pending]
            for name, scores in [*arms.score(users, hists),
                                 *((p.name, p.score_batch(users, hists)) for p in batch)]:
                for q, row in zip(pending, scores, strict=True):
                    tallies[name].add(rank_of(row, q.candidates, q.target), q.second_half,
                                      q.cold)
            pending.clear()
        arms.cycle()
        for p in batch:
            p.sync(positives)

    for k in range(n):
        user, item, ts_ms = int(data.user[k]), int(data.item[k]), int(data.ts_s[k]) * 1000
        clicked = bool(data.rating[k] >= 4)
        others = np.flatnonzero(~rated[user])
        slate = [item, *map(int, rng.choice(others, size=min(4, len(others)), replace=False))]
        rng.shuffle(slate)
        if clicked:
            hist = np.array(histories.get(user, [])[-50:], np.int64)
            cands = np.flatnonzero(~seen[user])
            q = Query(user, hist, cands, item, k >= n // 2, positives_seen[item] < COLD)
            pending.append(q)
            tallies["random"].add(float(rng.integers(1, len(cands) + 1)), q.second_half, q.cold)
            for p in peers:
                if p.online:
                    row = p.score_batch(np.array([user]), [hist])[0]
                    tallies[p.name].add(rank_of(row, cands, item), q.second_half, q.cold)
        arms.feed(events_of(k, user, slate, item, clicked, ts_ms, data), ts_ms)
        for it in slate:
            label = int(clicked and it == item)
            for p in peers:
                p.learn(user, it, label)
        seen[user, item] = True
        if clicked:
            positives += 1
            positives_seen[item] += 1
            histories.setdefault(user, []).append(item)
            if positives % args.cycle_every == 0:
                sync()
        if k % 20000 == 0 and k:
            print(f"  {k:,} ratings, {positives:,} positives, {time.perf_counter() - start:.0f} s",
                  flush=True)
    sync()
    results = {name: t.figures() for name, t in tallies.items()}
    peer_names = [p.name for p in peers]
    print(f"\n{n:,} ratings, {positives:,} positives evaluated; {data.n_items:,} items; "
          f"{time.perf_counter() - start:.0f} s; freshrec {arms.describe()}")
    header = f"{'method':72s} " + " ".join(f"{s + ' ' + m:>18s}" for s in ("all", "2nd half",
                                                                             "cold")
                                           for m in ("hit@10",))
    print(header + "   ndcg@10    mrr")
    for name, fig in results.items():
        cells = " ".join(f"{fig.get(seg, {}).get('hit@10', float('nan')):18.4f}"
                         for seg in ("all", "second_half", "cold"))
        print(f"{name[:72]:72s} {cells} {fig['all']['ndcg@10']:9.4f} {fig['all']['mrr']:7.4f}")
    best = {seg: max(results[p].get(seg, {}).get("hit@10", 0.0) for p in peer_names)
            for seg in ("all", "second_half")}
    ratios = {}
    for name in arms.names:
        for seg in ("all", "second_half"):
            ratio = results[name][seg]["hit@10"] / best[seg] if best[seg] else float("nan")
            ratios[f"{name} / best peer, hit@10 {seg}"] = round(ratio, 3)
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    incremental = arms.names[0]
    emit("bench.realdata", args, {"source": data.source, "ratings": n, "positives": positives,
                                  "methods": results, "ratios": ratios},
         {f"{incremental} / best peer, hit@10 {seg}": target(
             ratios[f"{incremental} / best peer, hit@10 {seg}"], ">=", 1.25)
          for seg in ("all", "second_half")})


if __name__ == "__main__":
    main()
