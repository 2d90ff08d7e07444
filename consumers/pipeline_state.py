"""The ingestion pipeline's checkpoint state: whole, or a delta of its growing parts.

Apart from :mod:`consumers.pipeline` so that one module is the step and the other what a
checkpoint holds of it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from consumers.base import DeadLetterSink, EventSource
from consumers.catalog import Catalog
from consumers.dedupe import Deduper
from consumers.events import Offsets, Sample, sample_from_list, sample_to_list
from consumers.joiner import Joiner
from consumers.replay import ReplayBuffers

__all__ = ["load_pipeline_state", "pipeline_marks", "pipeline_state"]


class IngestPipeline(Protocol):
    """The parts of :class:`consumers.pipeline.IngestPipeline` its checkpoint holds."""

    offsets: Offsets
    committed: Offsets
    partition_ts: dict[tuple[str, int], list[float]]
    joiner: Joiner
    deduper: Deduper
    buffers: ReplayBuffers
    catalog: Catalog
    fresh: list[Sample]
    dead_letters: DeadLetterSink
    source: EventSource


def pipeline_marks(p: IngestPipeline) -> dict[str, int]:
    """Where the growing parts of the state stand: what a delta checkpoint starts after."""
    joins = p.joiner.marks()
    return {**p.buffers.marks(), "dedupe": p.deduper.added, "catalog": p.catalog.stamp,
            "join_closed": joins["closed"], "join_history": joins["history"]}


def pipeline_state(p: IngestPipeline, since: dict[str, int] | None = None) -> dict[str, Any]:
    """All ingestion state as JSON-serialisable data, or a delta.

    ``since`` (:func:`pipeline_marks` at the last checkpoint): the growing parts (item
    rows, dedupe ids, catalog texts, closed join keys, user histories) and the replay
    buffers hold only what changed after it; the bounded rest (offsets, pending
    impressions, samples not trained yet) is whole.
    """
    since = since or {}
    return {
        "offsets": [[t, q, o] for (t, q), o in p.offsets.items()],
        "partition_ts": [[t, q, ts] for (t, q), (ts, _) in p.partition_ts.items()],
        "joiner": p.joiner.state_dict(
            {"closed": since["join_closed"], "history": since["join_history"]}
            if "join_closed" in since else None),
        "deduper": p.deduper.state_dict(since.get("dedupe")),
        "buffers": p.buffers.state_dict(since if "recent" in since else None),
        "catalog": p.catalog.state_dict(since.get("catalog")),
        "fresh": [sample_to_list(s) for s in p.fresh],
        # Dead letters are flushed before this state is taken: everything past this
        # DLQ position came after it, and is not sent again on redelivery.
        "dlq_position": [[q, o] for q, o in p.dead_letters.position().items()],
        "dlq_incarnation": p.dead_letters.incarnation(),
        # The logs the offsets belong to: a restart skips what the state holds already.
        "incarnations": p.source.incarnations(),
    }


def load_pipeline_state(p: IngestPipeline, state: dict[str, Any], final: bool = True) -> None:
    """Restore :func:`pipeline_state` output before the first step.

    A chain is applied base first; ``final`` False applies only the growing parts.
    """
    p.deduper.load_state_dict(state["deduper"])
    p.catalog.load_state_dict(state["catalog"])
    p.joiner.load_state_dict(state["joiner"], final)
    if not final:
        p.buffers.load_items(state["buffers"])
        p.buffers.load_samples(state["buffers"])  # columns: once, from the last link
        return
    p.offsets = {(t, int(q)): int(o) for t, q, o in state["offsets"]}
    p.committed, now = {}, time.monotonic()
    p.partition_ts = {(t, int(q)): [ts, now] for t, q, ts in state["partition_ts"]}
    p.buffers.load_state_dict(state["buffers"])
    p.fresh = [sample_from_list(f) for f in state["fresh"]]
    if "dlq_position" in state:
        p.dead_letters.resume_after({int(q): int(o) for q, o in state["dlq_position"]},
                                    state.get("dlq_incarnation", ""))
    p.source.resume(p.offsets, state.get("incarnations", {}))
