"""Bytes to validated events: pure functions that never raise on any input.

Every failure is returned as a :class:`Rejection` with a reason code, so the caller can
dead-letter the message and carry on with the good ones around it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from consumers.events import (
    EVENT_TYPES,
    MAX_ID_CHARS,
    MAX_TS_MS,
    BehaviourEvent,
    ItemUpdate,
    Reason,
    Rejection,
)

__all__ = ["DEFAULT_MAX_BYTES", "decode_object", "parse_event", "parse_item"]

DEFAULT_MAX_BYTES = 64 * 1024
_MAX_ID_CHARS = MAX_ID_CHARS
_MAX_TEXT_CHARS = 20_000
_EVENT_DECODER = msgspec.json.Decoder(BehaviourEvent)
_ITEM_DECODER = msgspec.json.Decoder(ItemUpdate)
_ANY_DECODER = msgspec.json.Decoder()
_T = TypeVar("_T")
#: C0 controls, DEL and C1 controls: never part of an id (a NUL or a line break in an id would
#: reach Redis keys, metric labels and log lines).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: Bytes without which no decoded string can hold a control character: a JSON string holds
#: C0 controls only as escapes, DEL raw, and C1 controls as two-byte UTF-8 sequences (0xC2 ..).
_CONTROL_MARKERS = (b"\\", b"\x7f", b"\xc2")
_EVENT_IDS = ("event_id", "user_id", "item_id", "request_id", "arm")


def decode_object(value: bytes | None, max_bytes: int) -> dict[str, Any] | Rejection:
    """Decode one message value into a JSON object, or say why it is not one."""
    if value is None:
        return Rejection(Reason.NOT_JSON, "empty message value (tombstone)")
    if len(value) > max_bytes:
        return Rejection(Reason.TOO_LARGE, f"{len(value)} bytes > limit {max_bytes}")
    try:
        obj = _ANY_DECODER.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection(Reason.NOT_UTF8, "value is not valid UTF-8")
        return Rejection(Reason.NOT_JSON, f"invalid JSON: {exc}"[:200])
    except RecursionError:
        return Rejection(Reason.NOT_JSON, "JSON nested deeper than the decoder allows")
    if not isinstance(obj, dict):
        return Rejection(Reason.NOT_OBJECT, f"JSON {type(obj).__name__}, expected an object")
    return obj


def _req_str(obj: dict[str, Any], name: str) -> str | Rejection:
    val = obj.get(name)
    if val is None:
        return Rejection(Reason.MISSING_FIELD, f"missing field {name!r}")
    if type(val) is not str:
        return Rejection(Reason.BAD_TYPE, f"{name!r} must be a string")
    if not val or len(val) > _MAX_ID_CHARS:
        return Rejection(Reason.BAD_VALUE, f"{name!r} must have 1..{_MAX_ID_CHARS} characters")
    if _CONTROL.search(val):
        return Rejection(Reason.BAD_VALUE, f"{name!r} must not contain control characters")
    return val


def _may_hold_controls(value: bytes) -> bool:
    """Whether a message's strings could hold a control character.

    A cheap byte scan that spares the common message a per-field check.
    """
    return any(marker in value for marker in _CONTROL_MARKERS)


def _controls_in(obj: Any, names: tuple[str, ...]) -> Rejection | None:
    for name in names:
        if _CONTROL.search(getattr(obj, name)):
            return Rejection(Reason.BAD_VALUE, f"{name!r} must not contain control characters")
    return None


def _req_ts(obj: dict[str, Any]) -> int | Rejection:
    val = obj.get("ts")
    if val is None:
        return Rejection(Reason.MISSING_FIELD, "missing field 'ts'")
    if type(val) is not int:
        return Rejection(Reason.BAD_TYPE, "'ts' must be an integer (epoch ms)")
    if not 0 <= val <= MAX_TS_MS:
        return Rejection(Reason.BAD_TS, f"'ts' must be epoch ms in [0, 2**53], got {val:.3g}")
    return val


def _optional_fields(obj: dict[str, Any]) -> None | Rejection:
    position = obj.get("position", 0)
    if type(position) is not int:
        return Rejection(Reason.BAD_TYPE, "'position' must be an integer")
    if position < 0:
        return Rejection(Reason.BAD_VALUE, "'position' must be >= 0")
    propensity = obj.get("propensity", 1.0)
    if type(propensity) not in (float, int):
        return Rejection(Reason.BAD_TYPE, "'propensity' must be a number")
    if not (0.0 < propensity <= 1.0) or math.isnan(propensity):
        return Rejection(Reason.BAD_VALUE, "'propensity' must be in (0, 1]")
    model_version = obj.get("model_version")
    if model_version is not None and type(model_version) is not str:
        return Rejection(Reason.BAD_TYPE, "'model_version' must be a string")
    context = obj.get("context")
    if context is not None:
        if type(context) is not dict:
            return Rejection(Reason.BAD_TYPE, "'context' must be an object")
        for v in context.values():
            if type(v) not in (str, int, float):
                return Rejection(Reason.BAD_TYPE, "'context' values must be strings or numbers")
    return None


#: What a decoder may raise on hostile bytes; every one of them becomes a rejection.
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
                  RecursionError)


def _guarded(parse: Callable[[bytes | None, int], _T | Rejection]
             ) -> Callable[[bytes | None, int], _T | Rejection]:
    """Make a parser total: an exception nobody foresaw is a rejection, never a crash loop."""

    @functools.wraps(parse)
    def total(value: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> _T | Rejection:
        try:
            return parse(value, max_bytes)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            return Rejection(Reason.BAD_VALUE, f"unparseable: {type(exc).__name__}")

    return total


@_guarded
def parse_event(value: bytes | None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> BehaviourEvent | Rejection:
    """Parse and validate one behaviour event. Never raises; unknown fields are ignored.

    Well-formed events decode and validate in one C pass (msgspec); only a message that
    fails it takes the Python path whose job is to name the reason.
    """
    if value is not None and len(value) <= max_bytes:
        try:
            event = _EVENT_DECODER.decode(value)
        except _DECODE_ERRORS:
            pass
        else:
            if not _may_hold_controls(value):
                return event
            return _controls_in(event, _EVENT_IDS) or event
    obj = decode_object(value, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    return _checked_event(obj)


def _checked_event(obj: dict[str, Any]) -> BehaviourEvent | Rejection:
    """Name the first thing wrong with a decoded object that failed the struct decoder."""
    for name in ("event_id", "type", "user_id", "item_id", "request_id", "arm"):
        got = _req_str(obj, name)
        if isinstance(got, Rejection):
            return got
    if obj["type"] not in EVENT_TYPES:
        return Rejection(Reason.BAD_VALUE, f"'type' must be one of {sorted(EVENT_TYPES)}")
    ts = _req_ts(obj)
    if isinstance(ts, Rejection):
        return ts
    rest = _optional_fields(obj)
    if isinstance(rest, Rejection):
        return rest
    # The checks above mirror the struct's constraints; anything they let through that the
    # C decoder refused (e.g. a float ts) is reported as a type error rather than accepted.
    return Rejection(Reason.BAD_TYPE, "fields do not match the event schema "
                                      "(or a key is written twice, once with a wrong type)")


@_guarded
def parse_item(value: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> ItemUpdate | Rejection:
    """Parse and validate one catalog upsert. Never raises."""
    if value is not None and len(value) <= max_bytes:
        try:
            item = _ITEM_DECODER.decode(value)
            if item.text.strip():  # blank text would give every blank item the same vector
                if not _may_hold_controls(value):
                    return item
                return _controls_in(item, ("item_id",)) or item
        except _DECODE_ERRORS:
            pass
    obj = decode_object(value, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    item_id = _req_str(obj, "item_id")
    if isinstance(item_id, Rejection):
        return item_id
    ts = _req_ts(obj)
    if isinstance(ts, Rejection):
        return ts
    text = obj.get("text")
    if text is None:
        return Rejection(Reason.MISSING_FIELD, "missing field 'text'")
    if type(text) is not str:
        return Rejection(Reason.BAD_TYPE, "'text' must be a string")
    if not text.strip() or len(text) > _MAX_TEXT_CHARS:
        return Rejection(Reason.BAD_VALUE, f"'text' must have 1..{_MAX_TEXT_CHARS} characters")
    attributes = obj.get("attributes")
    if attributes is not None and type(attributes) is not dict:
        return Rejection(Reason.BAD_TYPE, "'attributes' must be an object")
    return Rejection(Reason.BAD_TYPE, "fields do not match the item schema "
                                      "(or a key is written twice, once with a wrong type)")
