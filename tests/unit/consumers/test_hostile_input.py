"""Hostile bytes: every input is an event or a rejection with a reason, never an exception."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.dlq import MemoryDeadLetters
from consumers.event_time import TimePolicy
from consumers.events import BehaviourEvent, ItemUpdate, RawMessage, Reason, Rejection
from consumers.joiner import Joiner
from consumers.parse import parse_event, parse_item
from consumers.pipeline import IngestPipeline
from tests.fakes import ListSource
from tests.helpers import encode, event

GOOD = event("impression", eid="e1", ts=1_000)
LIMIT = 1 << 30  # let the hostile payload reach the decoder instead of the size check


def hostile_json() -> st.SearchStrategy[bytes]:
    leaves = st.one_of(st.integers(min_value=-(10**60), max_value=10**60),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.text(max_size=50), st.booleans(), st.none())
    values = st.recursive(leaves, lambda c: st.lists(c, max_size=4)
                          | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20)
    field_names = st.sampled_from(list(GOOD) + ["context", "model_version", "text"])
    objects = st.dictionaries(field_names, values, max_size=12).map(
        lambda d: {**GOOD, **d})
    return objects.map(lambda o: json.dumps(o).encode())


def splice(data: bytes, junk: bytes, at: int) -> bytes:
    at = at % (len(data) + 1)
    return data[:at] + junk + data[at:]


@settings(max_examples=300, deadline=None)
@given(hostile_json(), st.binary(min_size=1, max_size=4), st.integers(0, 10_000))
def test_hostile_json_and_invalid_utf8_anywhere_never_raise(data, junk, at):
    for value in (data, splice(data, junk, at), splice(data, b"\xff\xfe", at)):
        for parse in (parse_event, parse_item):
            out = parse(value, LIMIT)
            assert isinstance(out, (BehaviourEvent, ItemUpdate, Rejection))
            if isinstance(out, Rejection):
                assert isinstance(out.reason, Reason) and out.detail


@pytest.mark.parametrize("value", [
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b"[" * 200_000,
])
def test_deep_nesting_is_rejected_not_raised(value):
    for parse in (parse_event, parse_item):
        assert parse(value, LIMIT).reason is Reason.NOT_JSON


def test_invalid_utf8_inside_a_json_string_is_not_utf8():
    value = encode(GOOD).replace(b'"e1"', b'"e\xff\xfe1"')
    assert parse_event(value, LIMIT).reason is Reason.NOT_UTF8


@pytest.mark.parametrize("ts", [10**40, 2**63, 2**53 + 1, -1])
def test_absurd_timestamps_are_bad_ts(ts):
    out = parse_event(encode({**GOOD, "ts": ts}), LIMIT)
    assert isinstance(out, Rejection) and out.reason in (Reason.BAD_TS, Reason.BAD_VALUE)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_rejected(literal):
    value = encode(GOOD).replace(b'"propensity":0.5', b'"propensity":' + literal)
    assert isinstance(parse_event(value, LIMIT), Rejection)


def test_enormous_strings_are_rejected_by_size_or_value():
    huge = encode({**GOOD, "user_id": "u" * 5_000_000})
    assert parse_event(huge).reason is Reason.TOO_LARGE
    assert parse_event(huge, LIMIT).reason is Reason.BAD_VALUE


def test_time_policy_bounds_event_time_against_log_time():
    policy = TimePolicy(max_future_ms=3_600_000, max_age_ms=86_400_000)
    now = 1_800_000_000_000
    assert policy.check(now + 60_000, now) is None
    assert policy.check(now + 10 * 365 * 86_400_000, now).reason is Reason.BAD_TS
    assert policy.check(now // 1000, now).reason is Reason.BAD_TS  # seconds, not ms
    assert policy.check(now // 1000, 0) is None  # no log time: not checked
    assert TimePolicy(0, 0).check(now * 2, now) is None


def test_one_far_future_event_cannot_close_pending_impressions():
    now = 1_800_000_000_000
    msgs = [RawMessage("freshrec.events", 0, 0, b"u", encode(
        event("impression", eid="imp", ts=now, req="r1")), now)]
    # Ten years ahead: rejected. Fifty minutes ahead: accepted, but the watermark moves
    # only to its log time, so the impression (30 min window) stays open for its click.
    msgs.append(RawMessage("freshrec.events", 0, 1, b"u", encode(
        event("impression", eid="future", ts=now + 10 * 365 * 86_400_000, req="r9")), now + 1))
    msgs.append(RawMessage("freshrec.events", 0, 2, b"u", encode(
        event("impression", eid="soon", ts=now + 50 * 60_000, req="r8")), now + 2))
    msgs.append(RawMessage("freshrec.events", 0, 3, b"u", encode(
        event("click", eid="clk", ts=now + 5_000, req="r1")), now + 5_000))
    dlq = MemoryDeadLetters()
    pipeline = IngestPipeline(ListSource(msgs), dlq, joiner=Joiner(window_ms=1_800_000))
    report = pipeline.step(100)
    assert [r.reason for _, r in dlq.records] == [Reason.BAD_TS]
    assert report.positives == 1  # the click still found its open impression
