"""One memory budget in bytes: the state caps derive from it unless set explicitly."""

import pydantic
import pytest

from worker.config import load_settings
from worker.config.memory import (
    CAP_FIELDS,
    CLOSED_KEY_BYTES,
    DEDUPE_ID_BYTES,
    FIXED_BYTES,
    USER_BYTES,
    derive_caps,
    item_bytes,
)


def charged(caps: dict[str, int], dim: int = 64, lineages: int = 2) -> int:
    cost = {"max_items": item_bytes(dim, lineages), "join_max_users": USER_BYTES,
            "join_closed_keys": CLOSED_KEY_BYTES, "dedupe_max_ids": DEDUPE_ID_BYTES}
    return FIXED_BYTES + sum(cost[k] * n for k, n in caps.items())


def test_the_default_caps_fill_the_default_budget_and_no_more():
    ing = load_settings(None, {}).ingest
    caps = {k: getattr(ing, k) for k in CAP_FIELDS}
    assert 0.99 * ing.memory_budget_bytes <= charged(caps) <= ing.memory_budget_bytes
    assert all(n > 0 for n in caps.values())


def test_an_explicit_cap_is_kept_and_the_others_share_what_it_leaves():
    base = load_settings(None, {}).ingest
    ing = load_settings(None, {"ingest": {"max_items": 10_000}}).ingest
    assert ing.max_items == 10_000
    assert ing.join_max_users > base.join_max_users and ing.dedupe_max_ids > base.dedupe_max_ids
    caps = {k: getattr(ing, k) for k in CAP_FIELDS}
    assert charged(caps) <= ing.memory_budget_bytes


def test_a_bigger_budget_or_a_smaller_model_holds_more_items():
    small = load_settings(None, {}).ingest.max_items
    big = load_settings(None, {"ingest": {"memory_budget_bytes": 8_000_000_000}}).ingest
    assert big.max_items > 5 * small
    thin = load_settings(None, {"model": {"dim": 16}}).ingest.max_items
    assert thin > small
    three = load_settings(None, {"experiment": {"arms": [
        {"name": a, "lineage": "incremental", "share": 1 / 3} for a in "abc"],
        "control": "a"}}).ingest.max_items
    assert three < small  # a row per arm


def test_no_budget_leaves_the_caps_at_their_own_defaults():
    ing = load_settings(None, {"ingest": {"memory_budget_bytes": 0}}).ingest
    assert (ing.max_items, ing.join_max_users, ing.join_closed_keys, ing.dedupe_max_ids) == (
        1_000_000, 200_000, 200_000, 1_000_000)


def test_a_budget_below_the_start_up_footprint_names_the_least_that_works():
    with pytest.raises(pydantic.ValidationError, match="too small: the worker needs"):
        load_settings(None, {"ingest": {"memory_budget_bytes": 500_000_000}})
    with pytest.raises(ValueError, match="needs"):
        derive_caps(FIXED_BYTES + 10**9, {"max_items": 10**7}, 64, 2)


def test_replay_buffers_follow_the_item_cap_unless_set():
    # A buffered sample pins its item, so buffers past half the cap would hold items past it.
    ing = load_settings(None, {}).ingest
    assert ing.recent_capacity == ing.reservoir_capacity == ing.max_items // 2
    big = load_settings(None, {"ingest": {"memory_budget_bytes": 8_000_000_000}}).ingest
    assert big.recent_capacity == big.reservoir_capacity == 50_000  # never above the default
    mine = load_settings(None, {"ingest": {"recent_capacity": 70_000}}).ingest
    assert mine.recent_capacity == 70_000 and mine.reservoir_capacity == mine.max_items // 2
    uncapped = load_settings(None, {"ingest": {"max_items": 0}}).ingest
    assert uncapped.recent_capacity == uncapped.reservoir_capacity == 50_000
