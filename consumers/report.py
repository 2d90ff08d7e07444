"""What one ingestion step did, counted for the metrics and the experiment statistics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["BatchReport"]


@dataclass
class BatchReport:
    """What one :meth:`IngestPipeline.step` did; the worker turns it into metrics."""

    messages: int = 0
    consumed: Counter[str] = field(default_factory=Counter)  # by event type, plus "item"
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    duplicates: int = 0
    samples: int = 0
    positives: int = 0
    join_outcomes: Counter[str] = field(default_factory=Counter)
    #: (arm, event type) -> count; an impression at position 0 also counts as a request.
    #: Impressions, clicks and purchases are also counted per user bucket, as event type
    #: ``"{type}@{bucket}"`` (the units of the user-level statistics).
    arm_events: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (item_id, event type) -> count, for the exploration statistics
    item_events: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: entries the state caps dropped, by state (closed_keys, user_histories, dedupe_ids)
    evicted: Counter[str] = field(default_factory=Counter)
    #: pending impressions moved at a rebalance: released, adopted; stale hand-overs
    handover: Counter[str] = field(default_factory=Counter)
