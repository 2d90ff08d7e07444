"""Bytes to validated events: pure functions that never raise on any input.

Every failure is returned as a :class:`Rejection` with a reason code, so the caller can
dead-letter the message and carry on with the good ones around it.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from consumers.events import EVENT_TYPES, BehaviourEvent, ItemUpdate, Reason, Rejection

__all__ = ["DEFAULT_MAX_BYTES", "decode_object", "parse_event", "parse_item"]

DEFAULT_MAX_BYTES = 64 * 1024
_MAX_ID_CHARS = 256
_MAX_TEXT_CHARS = 20_000


def decode_object(value: bytes | None, max_bytes: int) -> dict[str, Any] | Rejection:
    """Decode one message value into a JSON object, or say why it is not one."""
    if value is None:
        return Rejection(Reason.NOT_JSON, "empty message value (tombstone)")
    if len(value) > max_bytes:
        return Rejection(Reason.TOO_LARGE, f"{len(value)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection(Reason.NOT_UTF8, "value is not valid UTF-8")
        return Rejection(Reason.NOT_JSON, f"invalid JSON: {exc}"[:200])
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
    return val


def _req_ts(obj: dict[str, Any]) -> int | Rejection:
    val = obj.get("ts")
    if val is None:
        return Rejection(Reason.MISSING_FIELD, "missing field 'ts'")
    if type(val) is not int:
        return Rejection(Reason.BAD_TYPE, "'ts' must be an integer (epoch ms)")
    if val < 0:
        return Rejection(Reason.BAD_VALUE, "'ts' must be >= 0")
    return val


def _optional_fields(obj: dict[str, Any]) -> tuple[int, float, str | None, Any] | Rejection:
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
    return position, float(propensity), model_version, context


def parse_event(value: bytes | None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> BehaviourEvent | Rejection:
    """Parse and validate one behaviour event. Never raises; unknown fields are ignored."""
    obj = decode_object(value, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    fields: list[str] = []
    for name in ("event_id", "type", "user_id", "item_id", "request_id", "arm"):
        got = _req_str(obj, name)
        if isinstance(got, Rejection):
            return got
        fields.append(got)
    event_id, etype, user_id, item_id, request_id, arm = fields
    if etype not in EVENT_TYPES:
        return Rejection(Reason.BAD_VALUE, f"'type' must be one of {sorted(EVENT_TYPES)}")
    ts = _req_ts(obj)
    if isinstance(ts, Rejection):
        return ts
    rest = _optional_fields(obj)
    if isinstance(rest, Rejection):
        return rest
    position, propensity, model_version, context = rest
    return BehaviourEvent(
        event_id, ts, etype, user_id, item_id, request_id, arm,
        position, propensity, model_version, context,
    )


def parse_item(value: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> ItemUpdate | Rejection:
    """Parse and validate one catalog upsert. Never raises."""
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
    return ItemUpdate(item_id, ts, text, attributes)
