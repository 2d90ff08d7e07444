"""Publishing one lineage's vectors: a new version, the served copy, drift bookkeeping."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from model_store.base import (
    PinnedError,
    StaleParentError,
    StoreUnavailable,
    VectorStore,
    VersionInfo,
)
from worker.learning.feed import DriftObserver
from worker.learning.items import ItemTable
from worker.learning.lineage import Lineage
from worker.learning.model import FreshRecModel

__all__ = ["Published", "next_seq", "publish_version"]

log = logging.getLogger(__name__)


class Published(NamedTuple):
    """What one publish did."""

    version: str | None  # None: nothing was published
    seconds: float
    why_not: str | None  # "pinned" | "unavailable" | None
    rows: int = 0  # rows written: every item for a full version, the changed ones for a delta
    layers: int = 0  # layers the version reads: 1 for a full version


def publish_version(store: VectorStore, table: ItemTable, lin: Lineage, model: FreshRecModel,
                    times: tuple[int, int], drift: DriftObserver | None, max_layers: int = 1
                    ) -> Published:
    """Publish ``model``'s vectors as the lineage's next version.

    When
    ``model`` is the candidate it becomes the served model; when it is the served one
    (a rejected cycle republishing for new items) nothing is promoted.

    A delta version when it can be one: only the rows that changed since the lineage's
    last version (trained sparse rows, new items, re-encoded texts), over that version,
    while it reads fewer than ``max_layers`` layers and the candidate's dense parameters
    have not moved. Otherwise, or if the store's pointer moved meanwhile (a rollback), a
    full version.
    """
    start = time.perf_counter()
    try:
        seq = next_seq(store, lin)
    except StoreUnavailable as exc:
        log.warning("publish of %s skipped: %s", lin.name, exc)
        return Published(None, 0.0, "unavailable")
    version = f"{lin.name}-{seq:08d}"
    # Ingestion may hand out item rows while this runs (the cycle is on its own thread):
    # publish exactly the rows that exist now, ids and vectors alike.
    n = len(table)
    ids = table.ids[:n]  # "" where a row is free (its item was evicted)
    table.sync()
    lin.grow(n)
    epoch, clock = table.epoch, table.index.clock
    live = np.array([bool(i) for i in ids]) if table.index.free else np.ones(n, bool)
    rows = None
    if lin.base_layers < max_layers:
        new = np.union1d(table.text_changed_since(lin.base_epoch, n),
                         table.index.created_since(lin.base_clock))
        rows = lin.changed_rows(model is lin.model, new[new < n], n)
        rows = None if rows is None else rows[live[rows]]
    info = VersionInfo(
        version=version, dim=model.width, item_count=int(live.sum()),
        created_at=datetime.now(UTC).isoformat(), model_version=version,
        extra={"lineage": lin.kind, "max_event_ts": str(times[0]),
               "watermark_ms": str(times[1]), "layout": "w|bias"},
        user_prior=model.prior().astype("<f4").tobytes(),
        user_tower=model.tower().to_bytes())
    try:
        try:
            if rows is None:
                raise StaleParentError("full")
            out_ids = [ids[r] for r in rows]
            vectors = model.export_rows(rows, table.semantic)
            store.publish(lin.name, version, out_ids, vectors, info, parent=lin.delta_base)
            layers = lin.base_layers + 1
        except StaleParentError:
            all_rows = np.flatnonzero(live)
            out_ids, rows = [ids[r] for r in all_rows], None
            vectors = model.export_rows(all_rows, table.semantic)
            store.publish(lin.name, version, out_ids, vectors, info)
            layers = 1
    except PinnedError:
        return Published(None, 0.0, "pinned")
    except StoreUnavailable as exc:
        # Keep the trained candidate: the next cycle publishes it (or a better one).
        log.warning("publish of %s skipped: %s", version, exc)
        return Published(None, 0.0, "unavailable")
    lin.published_as(version, seq, layers, clock, epoch)
    if model is lin.model:
        lin.promote()
    if drift is not None:
        drift.observe_publish(lin.name, out_ids, vectors[:, :-1], delta=rows is not None)
    return Published(version, time.perf_counter() - start, None, len(out_ids), layers)


def next_seq(store: VectorStore, lin: Lineage) -> int:
    """One past the highest sequence the lineage has published, by its count or the store's.

    A worker restored from a checkpoint older than its last publish must not reuse a
    version name: a published version's vectors never change, which readers rely on (the
    serving cache keys vectors by version), and the store refuses a retained name.
    """
    best = lin.seq
    for name in store.versions(lin.name):
        head, _, tail = name.rpartition("-")
        if head == lin.name and tail.isdigit():
            best = max(best, int(tail))
    return best + 1
