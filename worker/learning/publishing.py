"""Publishing one lineage's vectors: a new version, the served copy, drift bookkeeping."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from model_store.base import PinnedError, StoreUnavailable, VectorStore, VersionInfo
from worker.learning.feed import DriftObserver
from worker.learning.items import ItemTable
from worker.learning.lineage import Lineage
from worker.learning.model import FreshRecModel

__all__ = ["next_seq", "publish_version"]

log = logging.getLogger(__name__)


def publish_version(store: VectorStore, table: ItemTable, lin: Lineage, model: FreshRecModel,
                    times: tuple[int, int], drift: DriftObserver | None
                    ) -> tuple[str | None, float, str | None]:
    """Publish ``model``'s vectors as the lineage's next version.

    Returns (version or None, seconds, why not: "pinned" | "unavailable" | None). When
    ``model`` is the candidate it becomes the served model; when it is the served one
    (a rejected cycle republishing for new items) nothing is promoted.
    """
    start = time.perf_counter()
    try:
        seq = next_seq(store, lin)
    except StoreUnavailable as exc:
        log.warning("publish of %s skipped: %s", lin.name, exc)
        return None, 0.0, "unavailable"
    version = f"{lin.name}-{seq:08d}"
    # Ingestion may hand out item rows while this runs (the cycle is on its own thread):
    # publish exactly the rows that exist now, ids and vectors alike.
    n = len(table)
    ids = table.ids[:n]
    table.sync()
    lin.grow(n)
    vectors = model.export(n, table.semantic)
    info = VersionInfo(
        version=version, dim=int(vectors.shape[1]), item_count=n,
        created_at=datetime.now(UTC).isoformat(), model_version=version,
        extra={"lineage": lin.kind, "max_event_ts": str(times[0]),
               "watermark_ms": str(times[1]), "layout": "w|bias"},
        user_prior=model.prior().astype("<f4").tobytes())
    try:
        store.publish(lin.name, version, ids, vectors, info)
    except PinnedError:
        return None, 0.0, "pinned"
    except StoreUnavailable as exc:
        # Keep the trained candidate: the next cycle publishes it (or a better one).
        log.warning("publish of %s skipped: %s", version, exc)
        return None, 0.0, "unavailable"
    lin.seq = seq
    lin.published = version
    if model is lin.model:
        lin.promote()
    if drift is not None:
        drift.observe_publish(lin.name, ids, vectors[:, :-1])
    return version, time.perf_counter() - start, None


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
