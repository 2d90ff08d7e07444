import math

from scipy import stats

from consumers.columns import HOLDOUT_BUCKETS, Columns, holdout_bucket
from consumers.events import Sample
from consumers.replay import ReplayBuffers, Reservoir


def s(i: int) -> Sample:
    return Sample(i, f"u{i}", f"i{i}", i % 2, "a", f"r{i}", 0, 1.0, (f"h{i}",))


def test_reservoir_inclusion_is_uniform_over_a_long_stream():
    # 2,000 seeded runs of a 1,000-long stream into a 50-slot reservoir: each position's
    # inclusion count is Binomial(2000, 0.05). Chi-square over 10 position deciles.
    n, cap, runs = 1000, 50, 2000
    counts = [0] * n
    for seed in range(runs):
        r = Reservoir(cap, seed=seed)
        for i in range(n):
            r.add(i)  # type: ignore[arg-type]
        for x in r.items:
            counts[x] += 1  # type: ignore[index]
    deciles = [sum(counts[k * 100:(k + 1) * 100]) for k in range(10)]
    expected = runs * cap / 10
    chi2 = sum((c - expected) ** 2 / expected for c in deciles)
    assert stats.chi2.sf(chi2, df=9) > 0.001, deciles
    # The first and last items, the classic failure points, are within 4 sigma.
    sigma = math.sqrt(runs * 0.05 * 0.95)
    assert abs(counts[0] - runs * 0.05) < 4 * sigma
    assert abs(counts[-1] - runs * 0.05) < 4 * sigma


def test_mixed_sampling_respects_the_recent_share():
    b = ReplayBuffers(recent_capacity=10, reservoir_capacity=1000, recent_share=0.8, seed=1)
    for i in range(1000):
        b.add(s(i))
    got = b.sample(1000)
    from_recent = sum(x.ts >= 990 for x in got)
    # 800 drawn from the recent window + the reservoir's share of the last 10 (~1%).
    assert 790 <= from_recent <= 830
    assert len(b.sample(10, recent_share=0.0)) == 10


def test_empty_buffers_sample_nothing_and_one_empty_buffer_falls_back():
    b = ReplayBuffers(recent_capacity=5, reservoir_capacity=5)
    assert b.sample(4) == []
    b.add(s(1))
    assert len(b.sample(4)) == 4


def test_snapshot_restore_gives_the_same_buffers_and_continues_identically():
    a = ReplayBuffers(recent_capacity=20, reservoir_capacity=30, seed=3)
    for i in range(200):
        a.add(s(i))
    b = ReplayBuffers(recent_capacity=20, reservoir_capacity=30, seed=99)
    b.load_state_dict(a.state_dict())
    assert list(a.recent.items) == list(b.recent.items)
    assert a.reservoir.items == b.reservoir.items
    for i in range(200, 400):
        a.add(s(i))
        b.add(s(i))
    assert a.reservoir.items == b.reservoir.items
    assert a.sample(50) == b.sample(50)


def test_delta_states_follow_the_new_samples_and_rebuild_the_same_buffers():
    import numpy as np

    a = ReplayBuffers(recent_capacity=50, reservoir_capacity=40, seed=3)
    for i in range(300):
        a.add(s(i))
    base, mark = a.state_dict(), a.marks()
    for i in range(300, 310):  # ten new samples
        a.add(s(i))
    delta = a.state_dict(mark)
    assert len(delta["recent"]) == 10  # the new ones only, not the window
    assert len(delta["reservoir"]) == len(delta["reservoir_slots"]) <= 10
    mark2 = a.marks()
    for i in range(310, 400):  # more than the window: it turns over
        a.add(s(i))
    delta2 = a.state_dict(mark2)
    assert len(delta2["recent"]) == 50
    b = ReplayBuffers(recent_capacity=50, reservoir_capacity=40, seed=99)
    b.load_items(base), b.load_samples(base)
    b.load_items(delta), b.load_samples(delta)
    b.load_state_dict(delta2)  # the last link rebuilds the columns
    assert list(b.recent.items) == list(a.recent.items)
    assert b.reservoir.items == a.reservoir.items and b.reservoir.seen == a.reservoir.seen
    full = ReplayBuffers(recent_capacity=50, reservoir_capacity=40, seed=99)
    full.load_state_dict(a.state_dict())
    for cols in ("recent_rows", "reservoir_rows"):
        for col in ("item", "hist", "label"):
            np.testing.assert_array_equal(getattr(getattr(b, cols), col),
                                          getattr(getattr(full, cols), col))
    for i in range(400, 500):  # and both continue the same random sequence
        a.add(s(i))
        b.add(s(i))
    assert a.reservoir.items == b.reservoir.items


def test_the_newest_samples_columns_come_from_the_recent_ring_as_converted_ones():
    buffers = ReplayBuffers(recent_capacity=50, reservoir_capacity=10)
    samples = [s(i) for i in range(130)]  # the ring wraps more than twice
    for x in samples:
        buffers.add(x)
    fresh = samples[-37:]
    cols = buffers.newest_columns(fresh)
    assert cols is not None
    want = Columns.of(fresh, buffers.index)
    assert cols.item.tolist() == want.item.tolist()
    assert cols.label.tolist() == want.label.tolist()
    assert cols.bucket.tolist() == want.bucket.tolist()
    assert cols.hist[:, :1].tolist() == want.hist.tolist() and (cols.hist[:, 1:] == -1).all()
    assert buffers.newest_columns([]) is not None
    # not the newest, not in order, or no longer all in the window: convert instead
    assert buffers.newest_columns(samples[-38:-1]) is None
    assert buffers.newest_columns(fresh[::-1]) is None
    assert buffers.newest_columns(samples[-51:]) is None


def test_the_gate_set_is_the_newest_held_out_samples_of_the_window():
    buffers = ReplayBuffers(recent_capacity=300, reservoir_capacity=10)
    samples = [s(i) for i in range(1000)]
    for x in samples:
        buffers.add(x)
    below = HOLDOUT_BUCKETS // 5
    gate = buffers.recent_columns().newest_held_out(below, 25)
    held = [x for x in reversed(samples[-300:]) if holdout_bucket(x.request_id) < below][:25]
    assert gate.size == len(held) == 25
    assert gate.item.tolist() == [buffers.index.rows[x.item_id] for x in held]
    everything = buffers.recent_columns().newest_held_out(below, 10_000)
    assert everything.size == sum(holdout_bucket(x.request_id) < below for x in samples[-300:])
