"""Hostile strings: duplicate keys, lone surrogates, control characters, ids at the limit.

Each either parses to exactly one documented reading or is rejected with its reason, on the
fast (struct) path and on the slow (reason-naming) path alike, and a malformed catalog
message reaches the dead-letter sink through the pipeline like a malformed event.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.dlq import MemoryDeadLetters
from consumers.events import MAX_ID_CHARS, BehaviourEvent, ItemUpdate, RawMessage, Reason
from consumers.parse import parse_event, parse_item
from consumers.pipeline import IngestPipeline
from tests.fakes import ListSource
from tests.helpers import encode, event

GOOD = event("impression", eid="e1", ts=1_000)
ITEM = {"item_id": "i1", "ts": 1, "text": "blue jacket"}
IDS = ("event_id", "user_id", "item_id", "request_id", "arm")
#: Makes an otherwise valid message fail the struct decoder, so the slow path runs.
SLOW = {"propensity": 0}


def with_raw(obj: dict, field: str, raw: bytes) -> bytes:
    """``obj`` encoded with ``field``'s value replaced by raw JSON string bytes."""
    marker = "\x01MARK\x01"
    return encode({**obj, field: marker}).replace(encode(marker), raw)


@pytest.mark.parametrize("field", IDS)
@pytest.mark.parametrize("raw", [b'"a\\u0000b"', b'"a\\nb"', b'"\\u001f"', b'"a\x7fb"',
                                 b'"a\xc2\x85b"', b'"\\u009b[31m"'])
@pytest.mark.parametrize("slow", [False, True])
def test_a_control_character_in_an_id_is_a_bad_value_naming_the_field(field, raw, slow):
    out = parse_event(with_raw({**GOOD, **(SLOW if slow else {})}, field, raw))
    assert out.reason is Reason.BAD_VALUE and repr(field) in out.detail, out


@pytest.mark.parametrize("raw", [b'"a\\u0000"', b'"\\t"', b'"i\x7f"'])
def test_a_control_character_in_an_item_id_is_a_bad_value(raw):
    assert parse_item(with_raw(ITEM, "item_id", raw)).reason is Reason.BAD_VALUE
    assert parse_item(with_raw({**ITEM, "ts": "x"}, "item_id", raw)).reason is Reason.BAD_VALUE


def test_control_characters_outside_ids_are_data():
    got = parse_event(encode({**GOOD, "context": {"q": "line\none\x00"}}))
    assert isinstance(got, BehaviourEvent) and got.context == {"q": "line\none\x00"}
    item = parse_item(encode({**ITEM, "text": "tab\there\n"}))
    assert isinstance(item, ItemUpdate) and item.text == "tab\there\n"


def test_escaped_printable_characters_in_ids_are_fine():
    got = parse_event(with_raw(GOOD, "user_id", b'"caf\\u00e9 \\"q\\" \\\\ \\ud83d\\ude00"'))
    assert isinstance(got, BehaviourEvent) and got.user_id == 'café "q" \\ \U0001F600'


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'"x\\udfff"', b'"\\ud800\\u0041"'])
@pytest.mark.parametrize("parse, obj", [(parse_event, GOOD), (parse_item, ITEM)])
def test_a_lone_surrogate_escape_is_not_json(raw, parse, obj):
    # A lone surrogate is not a character: no UTF-8 encoding exists for it, so it could
    # never become a Redis key or a Kafka record.
    assert parse(with_raw(obj, "item_id", raw)).reason is Reason.NOT_JSON


@pytest.mark.parametrize("field", IDS)
def test_ids_at_the_length_limit_pass_and_one_more_character_fails(field):
    for char in ("x", "é", "\U0001F600"):  # 1, 2 and 4 UTF-8 bytes: the limit is in characters
        at = parse_event(encode({**GOOD, field: char * MAX_ID_CHARS}))
        assert isinstance(at, BehaviourEvent) and getattr(at, field) == char * MAX_ID_CHARS
        over = encode({**GOOD, field: char * (MAX_ID_CHARS + 1)})
        assert parse_event(over).reason is Reason.BAD_VALUE
    assert isinstance(parse_item(encode({**ITEM, "item_id": "x" * MAX_ID_CHARS})), ItemUpdate)
    assert parse_item(encode({**ITEM, "item_id": "x" * (MAX_ID_CHARS + 1)})).reason \
        is Reason.BAD_VALUE


def duplicated(obj: dict, field: str, first: object) -> bytes:
    """``obj`` with ``field`` written twice: ``first``, then its own value."""
    head = encode({field: first})[:-1]
    return head + b"," + encode(obj)[1:]


VALID_FIRST = {"event_id": "other", "user_id": "u9", "item_id": "i9", "request_id": "r9",
               "arm": "ctl", "ts": 5, "position": 3, "propensity": 0.9, "type": "click"}


@pytest.mark.parametrize("field", sorted(VALID_FIRST))
def test_with_a_key_written_twice_the_last_one_is_read(field):
    # As Python's json and JavaScript's JSON.parse read it, on either decoder path.
    assert parse_event(duplicated(GOOD, field, VALID_FIRST[field])) == parse_event(encode(GOOD))
    slow = {**GOOD, "propensity": 0}  # the slow path: the rejection names the last value
    assert parse_event(duplicated(slow, field, VALID_FIRST[field])) == parse_event(encode(slow))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(VALID_FIRST)), st.sampled_from([7, None, [1], {"a": 1}, 1.5]))
def test_an_invalid_earlier_occurrence_of_a_key_rejects_the_message(field, first):
    # Every occurrence is checked against its field's type: a message that two readers could
    # take differently (one keeping the first value, one the last) is not let through.
    if field == "propensity" and first == 1.5 or field in ("position", "ts") and first == 7:
        first = "x"
    out = parse_event(duplicated(GOOD, field, first))
    assert out.reason in (Reason.BAD_TYPE, Reason.BAD_VALUE), out


def test_malformed_item_messages_reach_the_dead_letters_through_the_pipeline():
    bad = [encode({**ITEM, "text": "  "}), with_raw(ITEM, "item_id", b'"\\ud800"'),
           with_raw(ITEM, "item_id", b'"i\\u0000"'), b"[]", None,
           encode({k: v for k, v in ITEM.items() if k != "text"})]
    msgs = [RawMessage("freshrec.items", 0, k, None, v) for k, v in enumerate(bad)]
    msgs.append(RawMessage("freshrec.items", 0, len(bad), None, encode(ITEM)))
    src, dlq = ListSource(msgs), MemoryDeadLetters()
    pipe = IngestPipeline(src, dlq)
    pipe.step(max_records=100)
    assert [r.reason.value for _, r in dlq.records] == [
        "bad_value", "not_json", "bad_value", "not_object", "not_json", "missing_field"]
    assert [m.offset for m, _ in dlq.records] == list(range(len(bad)))
    assert pipe.catalog.texts == {"i1": "blue jacket"}
    pipe.checkpoint()
    assert src.committed[("freshrec.items", 0)] == len(msgs)
