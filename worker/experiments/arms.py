"""Experiment arms: deterministic user -> arm assignment, the same in every process."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from worker.config import ArmSettings

__all__ = ["assign_arm"]


def assign_arm(user_id: str, arms: Sequence[ArmSettings], salt: str = "freshrec") -> str:
    """Map a user to an arm by a salted hash, proportionally to the arms' shares.

    sha256 rather than ``hash()``: Python's string hash is randomised per process, and an
    app, a simulator and a worker must all agree. Changing the salt reshuffles users.

    >>> from worker.config import ArmSettings
    >>> arms = [ArmSettings(name="a", share=0.5), ArmSettings(name="b", share=0.5)]
    >>> assign_arm("user-42", arms) == assign_arm("user-42", arms)
    True
    """
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(a.share for a in arms)
    acc = 0.0
    for arm in arms:
        acc += arm.share
        if point < acc:
            return arm.name
    return arms[-1].name
