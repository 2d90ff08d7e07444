"""A seeded traffic simulator with ground truth: users, items, text, cold start and drift.

Users and items have latent factors; the probability of a click is
``sigmoid(affinity * <p_u, z_i> + q_i + offset)``. An item's factor is built from its
category and style, and its text names both, so text carries real signal for cold items;
its quality ``q_i`` is invisible in the text and must be learnt from clicks. New items keep
arriving. At ``shift_at_request`` preferences move: every user's taste is permuted across
categories and item qualities are partly redrawn, as when a season or a trend turns.

The simulator asks for every slate as an app would, from a
:class:`worker.serving.service.SlateSource`: ``freshrec serve`` over HTTP in the demo, the
same rules in-process in tests. The answer names the user's arm, the version and each
item's propensity, which the simulator stamps on the impression, click and purchase events
it emits (a share of clicks is followed by a purchase) in the contract format; the first
impression of a request also carries the candidates and the history the app sent, the
context off-policy evaluation needs. When the
service cannot answer, it shows a random order, as an app falls back to a default. It does
not read Kafka: it only produces.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from model_store.base import StoreUnavailable
from worker.config import ArmSettings
from worker.experiments.arms import assign_arm
from worker.serving.service import SlateSource

__all__ = ["SimConfig", "Simulator", "World"]

CATEGORIES = ("running shoes", "rain jacket", "headphones", "cookbook", "desk lamp", "backpack")
STYLES = ("vintage", "sporty", "minimalist", "luxury")
COLOURS = ("red", "blue", "black", "green", "white", "grey", "orange")
NOUNS = ("edition", "series", "model", "collection")

#: (topic, key, value) -> None: where events go (a Kafka producer in real runs).
Emit = Callable[[str, bytes, bytes], None]


@dataclass(frozen=True)
class SimConfig:
    """Simulator knobs; all behaviour is a function of these and the seed."""

    seed: int = 7
    n_users: int = 2000
    initial_items: int = 600
    new_item_every: int = 25  # requests between catalog arrivals; 0: a fixed catalog
    candidates: int = 40
    new_candidates: int = 5  # of which the newest items
    slate: int = 5
    affinity: float = 3.0
    quality_sd: float = 0.8
    offset: float = -2.2
    shift_at_request: int | None = 30_000
    shift_quality_share: float = 0.5
    history_len: int = 10
    # Requests served before the measured run, as the app's past recommender would have
    # (a good but noisy one: it samples slates in proportion to the true click
    # probability), so users arrive with their histories already built.
    prewarm_requests: int = 0
    purchase_rate: float = 0.1  # share of clicks followed by a purchase 3 s later


@dataclass
class World:
    """The hidden truth: factors, qualities, texts."""

    cfg: SimConfig
    rng: np.random.Generator = field(init=False)
    user_pref: np.ndarray = field(init=False)
    item_z: list[np.ndarray] = field(default_factory=list)
    item_q: list[float] = field(default_factory=list)
    item_text: list[str] = field(default_factory=list)
    item_cat: list[int] = field(default_factory=list)
    shifted: bool = False

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.cfg.seed)
        k = len(CATEGORIES) + len(STYLES)
        pref = self.rng.normal(size=(self.cfg.n_users, k))
        # Each user cares strongly about one or two categories.
        fav = self.rng.integers(0, len(CATEGORIES), self.cfg.n_users)
        pref[np.arange(self.cfg.n_users), fav] += 2.5
        self.user_pref = pref / np.linalg.norm(pref, axis=1, keepdims=True)

    @property
    def n_items(self) -> int:
        """Items that exist so far."""
        return len(self.item_z)

    def new_item(self) -> tuple[str, str]:
        """Create an item; return (item_id, text)."""
        cat = int(self.rng.integers(len(CATEGORIES)))
        style = int(self.rng.integers(len(STYLES)))
        z = self.rng.normal(scale=0.25, size=len(CATEGORIES) + len(STYLES))
        z[cat] += 1.0
        z[len(CATEGORIES) + style] += 0.6
        item_id = f"item-{self.n_items:06d}"
        colour = COLOURS[int(self.rng.integers(len(COLOURS)))]
        noun = NOUNS[int(self.rng.integers(len(NOUNS)))]
        text = f"{STYLES[style]} {colour} {CATEGORIES[cat]}, {noun} {self.n_items % 97}"
        self.item_z.append(z)
        self.item_q.append(float(self.rng.normal(scale=self.cfg.quality_sd)))
        self.item_text.append(text)
        self.item_cat.append(cat)
        return item_id, text

    def click_prob(self, user: int, items: list[int]) -> np.ndarray:
        """Ground-truth click probabilities."""
        z = np.stack([self.item_z[i] for i in items])
        q = np.array([self.item_q[i] for i in items])
        logit = self.cfg.affinity * (z @ self.user_pref[user]) + q + self.cfg.offset
        return 1.0 / (1.0 + np.exp(-logit))

    def shift(self) -> None:
        """Move preferences across categories and redraw part of the item qualities."""
        n_cat = len(CATEGORIES)
        perm = np.roll(np.arange(n_cat), 1)
        self.user_pref[:, :n_cat] = self.user_pref[:, perm]
        for i in range(self.n_items):
            if self.rng.random() < self.cfg.shift_quality_share:
                self.item_q[i] = float(self.rng.normal(scale=self.cfg.quality_sd))
        self.shifted = True


class Simulator:
    """Generates requests, ranks through arms, emits events; seeded and deterministic.

    Args:
        cfg: simulator settings.
        arms: experiment arms (their shares drive assignment).
        ranker: where slates come from (the serving service); None serves random order.
        emit: event sink ``(topic, key, value)``.
        topics: (events topic, items topic).
        salt: assignment salt (must match the apps' and the worker's).
        clock_ms: event-time source; the default is wall-clock ms.
    """

    def __init__(self, cfg: SimConfig, arms: list[ArmSettings], ranker: SlateSource | None,
                 emit: Emit, topics: tuple[str, str] = ("freshrec.events", "freshrec.items"),
                 salt: str = "freshrec", clock_ms: Callable[[], int] | None = None) -> None:
        self.cfg, self.arms, self.ranker, self.emit = cfg, arms, ranker, emit
        self.events_topic, self.items_topic = topics
        self.salt = salt
        self.unserved = 0  # requests the service could not rank (random order shown)
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.world = World(cfg)
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.requests = 0
        self.history: dict[int, deque[int]] = {}
        self.impressions: Counter[str] = Counter()
        self.clicks: Counter[str] = Counter()
        self.new_item_clicks = 0
        self.purchases: Counter[str] = Counter()
        # Its own stream: purchases do not change which users, items and clicks a seed makes.
        self._purchase_rng = np.random.default_rng([cfg.seed, 1])
        self._prewarmed = 0
        self._past = False  # serving the pre-warm through the past recommender
        self.shift_requested = False  # set from another thread: shift at the next request
        self._arm_of = [assign_arm(f"user-{u:05d}", arms, salt) for u in range(cfg.n_users)]
        self._enc = msgspec.json.Encoder()

    def publish_catalog(self) -> None:
        """Emit the initial catalog (call once before requests)."""
        for _ in range(self.cfg.initial_items):
            self._add_item()

    def prewarm(self) -> None:
        """Serve ``prewarm_requests`` through the app's past recommender (see SimConfig).

        Users start with full click histories, so the measured period is neither dominated
        by the cold-start transient of every user at once nor a slow climb of CTR while
        histories fill (which drift detectors rightly take for a change): with a random
        past, the control's CTR rose from 0.20 to 0.33 over the first minutes of a run
        without any shift.
        """
        ranker, self.ranker = self.ranker, None
        self._past = True
        try:
            for _ in range(self.cfg.prewarm_requests):
                self.step(count=False)
        finally:
            self.ranker = ranker
            self._past = False
            self.impressions.clear()
            self.clicks.clear()
            self.purchases.clear()
            self.new_item_clicks = 0

    def _add_item(self) -> None:
        item_id, text = self.world.new_item()
        self.emit(self.items_topic, item_id.encode(), self._enc.encode(
            {"item_id": item_id, "ts": self.clock_ms(), "text": text,
             "attributes": {"category": CATEGORIES[self.world.item_cat[-1]]}}))

    def step(self, count: bool = True) -> dict[str, Any]:
        """Serve one request; returns what was shown and clicked (for tests and views)."""
        cfg, world = self.cfg, self.world
        if count:
            at_request = cfg.shift_at_request is not None and self.requests == cfg.shift_at_request
            if (at_request or self.shift_requested) and not world.shifted:
                world.shift()
            if cfg.new_item_every and self.requests and self.requests % cfg.new_item_every == 0:
                self._add_item()
            self.requests += 1
        self._prewarmed += 0 if count else 1
        user = int(self.rng.integers(cfg.n_users))
        user_id, arm = f"user-{user:05d}", self._arm_of[user]
        n = world.n_items
        newest = list(range(max(0, n - 50), n))
        picks = set(self.rng.choice(n, size=min(cfg.candidates, n), replace=False).tolist())
        picks.update(self.rng.choice(newest, size=min(cfg.new_candidates, len(newest)),
                                     replace=False).tolist())
        candidates = [f"item-{i:06d}" for i in sorted(picks)]
        hist = self.history.get(user, deque())
        recent = [f"item-{i:06d}" for i in hist]
        req = f"req-{cfg.seed}-{self.requests}-{self._prewarmed}"
        arm, version, shown, props = self._slate(user, arm, recent, candidates, req)
        rows = [int(s[5:]) for s in shown]
        probs = world.click_prob(user, rows)
        clicked = self.rng.random(len(rows)) < probs
        ts = self.clock_ms()
        for pos, (item_id, row, hit) in enumerate(zip(shown, rows, clicked, strict=True)):
            base = {"ts": ts, "user_id": user_id, "item_id": item_id, "request_id": req,
                    "arm": arm, "position": pos, "propensity": props[pos],
                    "model_version": version or ""}
            context = {"candidates": candidates, "history": recent} if pos == 0 else {}
            self._send({**base, **context, "event_id": f"{req}-i{pos}", "type": "impression"},
                       user_id)
            self.impressions[arm] += 1
            if hit:
                self._send({**base, "event_id": f"{req}-c{pos}", "type": "click",
                            "ts": ts + 1000}, user_id)
                self.clicks[arm] += 1
                if self._purchase_rng.random() < cfg.purchase_rate:
                    self._send({**base, "event_id": f"{req}-p{pos}", "type": "purchase",
                                "ts": ts + 3000}, user_id)
                    self.purchases[arm] += count
                if row >= n - 50:
                    self.new_item_clicks += 1
                hist.appendleft(row)
                if len(hist) > cfg.history_len:
                    hist.pop()
        self.history[user] = hist
        return {"arm": arm, "shown": shown, "clicked": clicked.tolist(), "version": version}

    def _slate(self, user: int, arm: str, recent: list[str], candidates: list[str],
               req: str) -> tuple[str, str | None, list[str], list[float]]:
        """(arm, version, shown items, propensities) from the service, or a fallback.

        The service assigns the arm (the app does not need to know the rule); ``arm`` is
        the simulator's own assignment, used when the service cannot answer. Fallbacks:
        the past recommender during the pre-warm, else a random order.
        """
        k = self.cfg.slate
        if self.ranker is not None:
            try:
                slate = self.ranker.rank(f"user-{user:05d}", recent, candidates, k,
                                         request_id=req)
                return slate.arm, slate.version, slate.items, slate.propensities
            except StoreUnavailable:
                self.unserved += 1
        if self._past:
            # Plackett-Luce on the true click probabilities (Gumbel-max); the propensity of
            # slot j is exact: p_i / (sum of p over the candidates not yet placed).
            p = self.world.click_prob(user, [int(c[5:]) for c in candidates])
            keys = np.log(p) + self.rng.gumbel(size=len(p))
            order = np.argsort(-keys)[:k]
            left = p.sum() - np.concatenate([[0.0], np.cumsum(p[order])[:-1]])
            props = (p[order] / left).tolist()
        else:
            order = self.rng.permutation(len(candidates))[:k]
            props = [1.0 / (len(candidates) - j) for j in range(len(order))]
        return arm, None, [candidates[i] for i in order], props

    def _send(self, event: dict[str, Any], key: str) -> None:
        self.emit(self.events_topic, key.encode(), self._enc.encode(event))

    def run(self, requests: int) -> Iterator[dict[str, Any]]:
        """Serve ``requests`` requests, yielding each result."""
        for _ in range(requests):
            yield self.step()

    def ctr(self) -> dict[str, float]:
        """Observed CTR per arm so far."""
        return {a: self.clicks[a] / self.impressions[a] for a in self.impressions
                if self.impressions[a]}
