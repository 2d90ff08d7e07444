"""Experiment arms: deterministic user -> arm assignment, the same in every process."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from worker.config import ArmSettings

__all__ = ["assign_arm"]


def assign_arm(user_id: str, arms: Sequence[ArmSettings], salt: str = "freshrec",
               live: Mapping[str, float] | None = None, control: str | None = None) -> str:
    """Map a user to an arm by a salted hash, proportionally to the arms' shares.

    sha256 rather than ``hash()``: Python's string hash is randomised per process, and an
    app, a simulator and a worker must all agree. Changing the salt reshuffles users.

    >>> from worker.config import ArmSettings
    >>> arms = [ArmSettings(name="a", share=0.5), ArmSettings(name="b", share=0.5)]
    >>> assign_arm("user-42", arms) == assign_arm("user-42", arms)
    True
    """
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    total = sum(a.share for a in arms)
    point = int.from_bytes(digest[:8], "big") / 2**64 * total
    acc = 0.0
    chosen = arms[-1]
    for arm in arms:
        if point < acc + arm.share:
            chosen = arm
            break
        acc += arm.share
    if (live is not None and control is not None and chosen.name in live
            and (point - acc) / total >= live[chosen.name]):
        return control
    return chosen.name
