"""One memory budget in bytes, from which the state caps derive.

Operators size a container in bytes, not in items or users. ``ingest.memory_budget_bytes``
(default sized for a 2 GB container) is split between what the worker holds per distinct
id: item rows, user histories, closed join keys and dedupe ids. A cap set explicitly is
kept as it is; the others take their share of what the explicit ones and the start-up
footprint leave.

The per-entry costs are what ``python -m bench.memory`` measures on an all-distinct stream
(peak RSS over start-up, divided by the entries held), rounded up: the bench checks that a
worker at the defaults stays under the budget, so a cost that grows fails there.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CAP_FIELDS", "FIXED_BYTES", "REPLAY_FIELDS", "budgeted_ingest", "derive_caps",
           "item_bytes"]

#: Resident memory before any state (431 MB measured after start-up: the interpreter, torch,
#: the text encoder, the dense model, the preallocated replay buffers), with a margin.
FIXED_BYTES = 500_000_000
#: Per item, at the peak (a full checkpoint being written holds a serialised copy of the
#: state beside the live one), with what each distinct item brings on an all-distinct
#: stream: its id in the index, the catalog and the join state, its sample rows.
ITEM_BASE_BYTES = 14_000
#: Per item and model lineage, per embedding dimension: the row, its two Adam moments, the
#: published copy and the checkpoint's, in float32.
ITEM_LINEAGE_BYTES_PER_DIM = 5 * 4
#: Items are evicted between cycles once they pass 1.25 times their cap (consumers.eviction).
ITEM_OVERSHOOT = 1.25
USER_BYTES = 1_200  # a user's recent-history entry (ids of the last clicks, LRU links)
CLOSED_KEY_BYTES = 250  # an impression's key remembered after its window closed
DEDUPE_ID_BYTES = 250  # an event id with its time, in the dedupe window

#: Shares of the state budget, in the order the caps are listed in ``CAP_FIELDS``.
_SHARES = {"max_items": 0.75, "join_max_users": 0.1, "join_closed_keys": 0.05,
           "dedupe_max_ids": 0.1}
CAP_FIELDS = tuple(_SHARES)
REPLAY_FIELDS = ("recent_capacity", "reservoir_capacity")
_FLOORS = {"max_items": 1_000, "join_max_users": 1_000, "join_closed_keys": 1_000,
           "dedupe_max_ids": 10_000}


def item_bytes(dim: int, lineages: int) -> int:
    """Bytes one unit of the item cap costs, the eviction overshoot included.

    ``lineages`` model lineages of ``dim`` dimensions each hold a row per item.
    """
    per_item = ITEM_BASE_BYTES + lineages * dim * ITEM_LINEAGE_BYTES_PER_DIM
    return int(ITEM_OVERSHOOT * per_item)


def derive_caps(budget_bytes: int, explicit: dict[str, int], dim: int,
                lineages: int) -> dict[str, int]:
    """The caps not set explicitly, sized so that everything fits ``budget_bytes``.

    Args:
        budget_bytes: the worker's whole memory budget.
        explicit: caps the operator set, which are kept and charged first.
        dim: the embedding size.
        lineages: the model lineages (arms), each holding a row per item.

    Raises:
        ValueError: the budget does not cover the start-up footprint and the explicit caps
            (the message names the smallest budget that would).
    """
    cost = {"max_items": item_bytes(dim, lineages), "join_max_users": USER_BYTES,
            "join_closed_keys": CLOSED_KEY_BYTES, "dedupe_max_ids": DEDUPE_ID_BYTES}
    free = budget_bytes - FIXED_BYTES - sum(cost[k] * n for k, n in explicit.items())
    derived = [k for k in CAP_FIELDS if k not in explicit]
    need = sum(cost[k] * _FLOORS[k] for k in derived)
    if free < need:
        least = budget_bytes - free + need
        raise ValueError(f"ingest.memory_budget_bytes = {budget_bytes:,} is too small: the "
                         f"worker needs {least:,} bytes at least with these settings")
    share = sum(_SHARES[k] for k in derived)
    return {k: max(_FLOORS[k], int(free * _SHARES[k] / share / cost[k])) for k in derived}


def budgeted_ingest(ingest: Any, dim: int, lineages: int) -> dict[str, int]:
    """What to update an ingest section with: its derived caps (none without a budget).

    The replay buffers follow the item cap too, unless set: an item a buffered sample is
    about is never evicted, so buffers larger than the cap would hold items past it (on a
    stream of distinct items, one per sample). Each buffer gets at most half the item cap.
    """
    budget = int(ingest.memory_budget_bytes)
    if budget == 0:
        return {}
    explicit = {k: int(getattr(ingest, k)) for k in CAP_FIELDS if k in ingest.model_fields_set}
    caps = derive_caps(budget, explicit, dim, lineages)
    items = caps.get("max_items", explicit.get("max_items", 0))
    if items > 0:
        for buffer in REPLAY_FIELDS:
            if buffer not in ingest.model_fields_set:
                caps[buffer] = max(1, min(int(getattr(ingest, buffer)), items // 2))
    return caps
