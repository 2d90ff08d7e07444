import pytest

from consumers.dedupe import Deduper


def test_repeat_inside_window_is_duplicate():
    d = Deduper(max_ids=10, window_ms=1000)
    assert d.seen_before("a", 0) is False
    assert d.seen_before("a", 500) is True


def test_memory_is_bounded_by_count_and_age():
    d = Deduper(max_ids=3, window_ms=10_000)
    for i in range(5):
        d.seen_before(f"e{i}", i)
    d.trim()
    assert len(d) == 3 and d.seen_before("e0", 6) is False
    d2 = Deduper(max_ids=100, window_ms=1000)
    d2.seen_before("old", 0)
    d2.seen_before("new", 5000)
    d2.trim()
    assert len(d2) == 1 and d2.seen_before("old", 5001) is False


def test_state_round_trip():
    d = Deduper()
    d.seen_before("x", 1)
    d2 = Deduper()
    d2.load_state_dict(d.state_dict())
    assert d2.seen_before("x", 2) is True


def test_bad_bounds_raise():
    with pytest.raises(ValueError):
        Deduper(max_ids=0)
