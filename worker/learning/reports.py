"""What a training cycle reports: plain data, importing nothing of the project.

Kept apart so that the metrics module, the loop and the CLI can all read a report without
importing the trainer (which would close an import circle through the metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CycleOutcome", "CycleReport"]


class CycleOutcome(StrEnum):
    """How one lineage's cycle ended (the ``outcome`` label of ``freshrec_train_cycles_total``).

    PUBLISHED: a new version is live. REJECTED: the gate refused the candidate (served
    weights may still be republished when new items need vectors). FROZEN: a frozen lineage
    had nothing to republish. PINNED: a rollback pin refused the publish. UNAVAILABLE: the
    store could not be reached; the trained candidate is kept and published next cycle.
    IDLE: nothing new.
    """

    PUBLISHED = "published"
    REJECTED = "rejected"
    FROZEN = "frozen"
    PINNED = "pinned"
    UNAVAILABLE = "unavailable"
    IDLE = "idle"


@dataclass(frozen=True, kw_only=True)
class CycleReport:
    """What one cycle did for one lineage. Losses are NaN where nothing was measured."""

    arm: str
    lineage: str
    outcome: CycleOutcome
    n_fresh: int
    n_trained: int
    progressive_auc: float
    progressive_logloss: float
    train_loss: float
    gate_served_loss: float
    gate_candidate_loss: float
    published_version: str | None
    publish_s: float
    duration_s: float
    #: Consecutive gate rejections of this lineage's candidate, this one included.
    rejected_in_a_row: int = 0
    #: Rows the published version wrote (all items, or a delta's changed ones), and the
    #: layers it reads (1: a full version).
    published_rows: int = 0
    published_layers: int = 0

    @property
    def version_seq(self) -> int | None:
        """The published version's sequence number (``<arm>-<seq>``), if one was published."""
        if self.published_version is None:
            return None
        return int(self.published_version.rsplit("-", 1)[1])
