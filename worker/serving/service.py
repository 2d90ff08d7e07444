"""What an app asks of freshrec at request time: vectors of items, and a ranked slate.

One :class:`RankService` holds the serving rules so that every way of reaching them (the
HTTP service, the simulator in-process, a test) applies the same ones: the salted-hash arm
assignment, the user-vector rule of :mod:`worker.serving.ranker`, each arm's exploration
policy, and the propensity of every shown item, which the app stamps on its impressions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.config import ArmSettings
from worker.experiments.arms import assign_arm
from worker.experiments.explore import Greedy, Policy, Thompson, make_policy
from worker.serving.cache import CachedVectors, VectorReader, rows_json
from worker.serving.ranker import ItemStats, Ranker

__all__ = ["RankService", "Slate", "SlateSource", "UnknownArm"]


class UnknownArm(LookupError):
    """The request named an arm that is not in the experiment."""


@dataclass(frozen=True)
class Slate:
    """A ranked answer: what to show, why, and what to stamp on the impressions."""

    arm: str
    version: str | None  # the published version that scored it (None: nothing published)
    items: list[str]
    scores: list[float]
    propensities: list[float]
    policy: str
    request_id: str


class SlateSource(Protocol):
    """Anything that ranks like :meth:`RankService.rank` (in-process, or over HTTP)."""

    def rank(self, user_id: str, recent_items: Sequence[str], candidates: Sequence[str],
             k: int | None = None, arm: str | None = None,
             request_id: str | None = None) -> Slate:
        """The top ``k`` candidates in display order, with propensities."""
        ...


class RankService:
    """Ranks candidates for a user through the user's experiment arm.

    Args:
        store: published vectors (Redis in production, behind a :class:`CachedVectors`).
        arms: the experiment's arms; their order and shares define the assignment.
        salt: the assignment salt (the worker's ``experiment.salt``).
        stats: per-item impression/click counts for UCB and Thompson (None: zeros).
        seed: seeds the exploring policies' random streams.
        propensity_draws: Monte-Carlo draws behind Thompson propensities.
        control: the control arm, which takes the users a ramped arm does not have yet.
        shares: the live shares of guarded ramps (:class:`worker.experiments.ramp.LiveShares`);
            None: the configured shares.
    """

    def __init__(self, store: VectorReader, arms: Sequence[ArmSettings], salt: str = "freshrec",
                 stats: ItemStats | None = None, seed: int = 0,
                 propensity_draws: int = 32, control: str | None = None,
                 shares: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.arms = list(arms)
        self.salt = salt
        self.control, self.shares = control, shares
        self.ranker = Ranker(store, stats)
        self.store = store
        self.policies: dict[str, Policy] = {}
        for k, arm in enumerate(self.arms):
            policy = make_policy(arm.policy, seed + k, arm.epsilon)
            if isinstance(policy, Thompson):
                policy.propensity_draws = propensity_draws
            self.policies[arm.name] = policy
        self._names = {a.name: a for a in self.arms}

    def arm_for(self, user_id: str) -> str:
        """The user's arm under the salted-hash rule (docs/contracts/http.md, "Arm assignment")."""
        if self.shares is None:
            return assign_arm(user_id, self.arms, self.salt)
        return assign_arm(user_id, self.arms, self.salt, self.shares(), self.control)

    def check_arm(self, arm: str) -> str:
        """``arm`` if the experiment has it, else :class:`UnknownArm`."""
        if arm not in self._names:
            raise UnknownArm(f"unknown arm {arm!r}; arms: {sorted(self._names)}")
        return arm

    def vectors_json(self, arm: str, ids: Sequence[str]) -> tuple[str | None, int, list[bytes]]:
        """(version, width, each id's vector as JSON or ``null``), from one version."""
        arm = self.check_arm(arm)
        if isinstance(self.store, CachedVectors):
            return self.store.lookup_json(arm, ids)
        version, vecs, found = self.store.lookup(arm, ids)
        return version, int(vecs.shape[1]), rows_json(vecs, found)

    def rank(self, user_id: str, recent_items: Sequence[str], candidates: Sequence[str],
             k: int | None = None, arm: str | None = None,
             request_id: str | None = None) -> Slate:
        """The top ``k`` candidates (all when None) in display order, with propensities.

        ``arm`` overrides the assignment (for QA and forced experiences); the returned
        ``arm`` is the one whose vectors and policy produced the slate.
        """
        arm = self.check_arm(arm) if arm is not None else self.arm_for(user_id)
        cands = list(candidates)
        version, scores = self.ranker.scores(recent_items, cands, arm)
        policy = self.policies[arm]
        stats = self.ranker.stats
        if stats is not None and not isinstance(policy, Greedy):
            imps, clicks = stats.item_stats(cands)
        else:
            imps = clicks = np.zeros(len(cands))
        order, props = policy.choose(scores, imps, clicks, len(cands) if k is None else k)
        return Slate(arm=arm, version=version, items=[cands[int(i)] for i in order],
                     scores=[float(scores[int(i)]) for i in order],
                     propensities=[float(p) for p in props],
                     policy=self._names[arm].policy,
                     request_id=request_id or uuid.uuid4().hex)
