"""Immutable records that flow through ingestion: raw messages, events, rejections, samples.

Events and samples are msgspec Structs with ``gc=False``: immutable and typed like frozen
dataclasses, several times cheaper to build, and invisible to the cyclic garbage collector,
which otherwise re-scans every buffered sample on each full collection (they hold only
strings, numbers and tuples, so they cannot form cycles).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple, Protocol

import msgspec

__all__ = [
    "EVENT_TYPES",
    "MAX_TS_MS",
    "BehaviourEvent",
    "ItemUpdate",
    "Message",
    "Offsets",
    "RawMessage",
    "Reason",
    "Rejection",
    "Sample",
    "sample_from_list",
    "sample_to_list",
]

EVENT_TYPES = frozenset({"impression", "click", "purchase"})
MAX_ID_CHARS = 256
#: Largest ``ts`` accepted at all (epoch ms, year ~287,000): exact in a float64 and in any
#: JSON reader. The time policy relative to the log time is much tighter (docs/contracts/events.md).
MAX_TS_MS = 2**53

#: Next offset to read per (topic, partition): what a consumer commits.
Offsets = dict[tuple[str, int], int]

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_Scalar = str | int | float


class Reason(StrEnum):
    """Why a message went to the dead-letter topic: a small, fixed set (a metric label)."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_VALUE = "bad_value"
    BAD_TS = "bad_ts"
    UNKNOWN_TOPIC = "unknown_topic"


class Message(Protocol):
    """What ingestion reads of a Kafka record (kafka-python's ConsumerRecord fits as is)."""

    @property
    def topic(self) -> str:
        """Source topic."""
        ...

    @property
    def partition(self) -> int:
        """Source partition."""
        ...

    @property
    def offset(self) -> int:
        """Offset within the partition."""
        ...

    @property
    def key(self) -> bytes | None:
        """Record key (user id for events, item id for items)."""
        ...

    @property
    def value(self) -> bytes | None:
        """Record value: the JSON payload, or None for a tombstone."""
        ...

    @property
    def timestamp(self) -> int:
        """Log time of the record (epoch ms; <= 0 when unknown)."""
        ...


class RawMessage(NamedTuple):
    """One record as read from Kafka, before any decoding (tests and fakes build these)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


class BehaviourEvent(msgspec.Struct, frozen=True, gc=False):
    """A validated user-behaviour event (the contract: docs/contracts/events.md).

    The field constraints are enforced while decoding, in C; unknown fields are ignored.
    """

    event_id: _Id
    ts: Annotated[int, msgspec.Meta(ge=0, le=MAX_TS_MS)]
    type: Literal["impression", "click", "purchase"]
    user_id: _Id
    item_id: _Id
    request_id: _Id
    arm: _Id
    position: Annotated[int, msgspec.Meta(ge=0)] = 0
    propensity: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    model_version: str | None = None
    context: dict[str, _Scalar] | None = None


class ItemUpdate(msgspec.Struct, frozen=True, gc=False):
    """A validated catalog upsert: the item's text drives its semantic vector."""

    item_id: _Id
    ts: Annotated[int, msgspec.Meta(ge=0, le=MAX_TS_MS)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    attributes: dict[str, Any] | None = None


class Rejection(NamedTuple):
    """Why a message could not be accepted; ``detail`` is for people, ``reason`` for metrics."""

    reason: Reason
    detail: str


class Sample(msgspec.Struct, frozen=True, gc=False, order=True):
    """A labelled training example produced by joining an impression with its clicks.

    ``history`` is the user's most recent positively-engaged items *before* this impression,
    newest first, so the model sees exactly what serving would have seen.
    """

    ts: int
    user_id: str
    item_id: str
    label: int
    arm: str
    request_id: str
    position: int
    propensity: float
    history: tuple[str, ...]


def sample_to_list(sample: Sample) -> list[Any]:
    """JSON form of a sample: its fields in order."""
    return list(msgspec.structs.astuple(sample))


def sample_from_list(fields: list[Any]) -> Sample:
    """Rebuild a sample from :func:`sample_to_list` output."""
    ts, user_id, item_id, label, arm, request_id, position, propensity, history = fields
    return Sample(ts, user_id, item_id, label, arm, request_id, position, propensity,
                  tuple(history))
