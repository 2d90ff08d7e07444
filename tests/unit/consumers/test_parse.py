import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.events import BehaviourEvent, ItemUpdate, Rejection
from consumers.parse import parse_event, parse_item
from tests.helpers import encode, event, malformed


def test_valid_event_parses_with_all_fields():
    got = parse_event(encode(event("click", eid="e1", ts=5, context={"device": "ios", "h": 3},
                                   model_version="v7", unknown_field=[1])))
    assert isinstance(got, BehaviourEvent)
    assert (got.event_id, got.ts, got.type, got.propensity, got.model_version) == (
        "e1", 5, "click", 0.5, "v7")
    assert got.context == {"device": "ios", "h": 3}


@pytest.mark.parametrize(("value", "reason"), malformed())
def test_malformed_event_is_rejected_with_its_reason(value, reason):
    got = parse_event(value)
    assert isinstance(got, Rejection)
    assert got.reason.value == reason
    assert got.detail


def test_tombstone_is_rejected():
    assert parse_event(None).reason.value == "not_json"


@pytest.mark.parametrize("field", ["event_id", "ts", "type", "user_id", "item_id",
                                   "request_id", "arm"])
def test_each_required_field_is_required(field):
    obj = event("impression", eid="e", ts=1)
    del obj[field]
    got = parse_event(encode(obj))
    assert isinstance(got, Rejection) and got.reason.value == "missing_field"
    assert field in got.detail


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("ts", True, "bad_type"), ("ts", -1, "bad_ts"), ("position", -2, "bad_value"),
    ("position", 1.5, "bad_type"), ("propensity", 1.5, "bad_value"),
    ("propensity", "high", "bad_type"), ("user_id", "", "bad_value"), ("user_id", 7, "bad_type"),
    ("context", {"a": [1]}, "bad_type"), ("context", "x", "bad_type"),
    ("model_version", 3, "bad_type"),
])
def test_ill_typed_fields_are_rejected(field, value, reason):
    got = parse_event(encode({**event("click", eid="e", ts=1), field: value}))
    assert isinstance(got, Rejection) and got.reason.value == reason


def test_item_update_parses_and_rejects():
    ok = parse_item(encode({"item_id": "i1", "ts": 3, "text": "red shoes", "attributes": {}}))
    assert isinstance(ok, ItemUpdate) and ok.text == "red shoes"
    assert parse_item(encode({"item_id": "i1", "ts": 3})).reason.value == "missing_field"
    assert parse_item(encode({"item_id": "i1", "ts": 3, "text": "  "})).reason.value == "bad_value"
    assert parse_item(encode({"item_id": "i1", "ts": 3, "text": "x",
                              "attributes": 3})).reason.value == "bad_type"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    assert isinstance(parse_event(data), BehaviourEvent | Rejection)
    assert isinstance(parse_item(data), ItemUpdate | Rejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(), kids, max_size=3),
    max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["event_id", "ts", "type", "user_id", "item_id",
                                        "request_id", "arm", "position", "propensity",
                                        "context", "model_version", "x"]), json_values))
def test_arbitrary_json_objects_never_raise(obj):
    try:
        data = encode(obj)
    except (TypeError, OverflowError):  # ints beyond 64 bits: not sendable as JSON here
        return
    assert isinstance(parse_event(data), BehaviourEvent | Rejection)


# --- Properties with an oracle: what a valid event says comes out unchanged, and each kind
# of invalid field is named by its own reason.

ids = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=256)
valid_events = st.fixed_dictionaries(
    {"event_id": ids, "ts": st.integers(0, 2**53), "type": st.sampled_from(
        ["impression", "click", "purchase"]), "user_id": ids, "item_id": ids,
     "request_id": ids, "arm": ids},
    optional={"position": st.integers(0, 2**31), "propensity": st.floats(
        min_value=1e-9, max_value=1.0), "model_version": st.text(max_size=40),
        "context": st.dictionaries(st.text(max_size=10), st.text(max_size=10) | st.integers(
            -2**31, 2**31) | st.floats(allow_nan=False, allow_infinity=False), max_size=4)})


@settings(max_examples=300, deadline=None)
@given(valid_events)
def test_a_valid_event_parses_to_exactly_what_it_says(obj):
    got = parse_event(encode(obj))
    assert isinstance(got, BehaviourEvent), got
    defaults = {"position": 0, "propensity": 1.0, "model_version": None, "context": None}
    for field, want in {**defaults, **obj}.items():
        assert getattr(got, field) == want, field


@settings(max_examples=300, deadline=None)
@given(valid_events, st.sampled_from([
    ("ts", -1, "bad_ts"), ("ts", 2**53 + 1, "bad_ts"), ("ts", "1", "bad_type"),
    ("type", "view", "bad_value"), ("user_id", "", "bad_value"),
    ("item_id", "x" * 257, "bad_value"), ("arm", 7, "bad_type"),
    ("position", -1, "bad_value"), ("position", 1.5, "bad_type"),
    ("propensity", 0.0, "bad_value"), ("propensity", 1.01, "bad_value"),
    ("propensity", "high", "bad_type"), ("context", [1], "bad_type"),
    ("context", {"k": [1]}, "bad_type"), ("model_version", 3, "bad_type")]))
def test_one_bad_field_in_a_valid_event_is_rejected_for_that_field(obj, bad):
    field, value, reason = bad
    got = parse_event(encode({**obj, field: value}))
    assert isinstance(got, Rejection), got
    assert got.reason.value == reason, (got, bad)


@settings(max_examples=200, deadline=None)
@given(valid_events, st.sampled_from(["event_id", "ts", "type", "user_id", "item_id",
                                      "request_id", "arm"]))
def test_a_valid_event_missing_a_required_field_names_it(obj, field):
    got = parse_event(encode({k: v for k, v in obj.items() if k != field}))
    assert isinstance(got, Rejection) and got.reason.value == "missing_field"
    assert repr(field) in got.detail
