"""The ``freshrec.samples`` wire format: labelled samples from the ingest tier to trainers.

Compact and versioned: a value is MessagePack ``[version, ts, user_id, item_id, label, arm,
request_id, position, propensity, [history...]]`` (version 1), about half the size of the
JSON form. The record key is the sample's identity, ``request_id`` + US (0x1f) +
``item_id``: an ingest process that crashes after producing a sample but before committing
the events behind it produces the same sample again after restart (its restored join state
closes the same impression the same way), and a trainer drops the repeat by that key. So
each impression reaches training once in effect, through ``kill -9`` of any ingest process,
without Kafka transactions.
"""

from __future__ import annotations

import msgspec

from consumers.events import Reason, Rejection, Sample

__all__ = ["SCHEMA_VERSION", "decode_sample", "encode_sample", "sample_key"]

SCHEMA_VERSION = 1
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(
    tuple[int, int, str, str, int, str, str, int, float, list[str]])


def sample_key(sample: Sample) -> str:
    """The sample's identity: one per impression (request, item)."""
    return f"{sample.request_id}\x1f{sample.item_id}"


def encode_sample(sample: Sample) -> tuple[bytes, bytes]:
    """(key, value) of one sample record."""
    value = _encoder.encode((SCHEMA_VERSION, sample.ts, sample.user_id, sample.item_id,
                             sample.label, sample.arm, sample.request_id, sample.position,
                             sample.propensity, list(sample.history)))
    return sample_key(sample).encode(), value


def decode_sample(value: bytes | None) -> Sample | Rejection:
    """A sample, or why the record is not one (never raises).

    >>> decode_sample(encode_sample(Sample(1, "u", "i", 1, "a", "r", 0, 0.5, ("h",)))[1])
    Sample(ts=1, user_id='u', item_id='i', label=1, arm='a', request_id='r', position=0, \
propensity=0.5, history=('h',))
    """
    if value is None:
        return Rejection(Reason.MISSING_FIELD, "empty sample record")
    try:
        version, ts, user, item, label, arm, req, position, propensity, history = (
            _decoder.decode(value))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        return Rejection(Reason.BAD_TYPE, f"not a version-1 sample: {exc}"[:200])
    if version != SCHEMA_VERSION:
        return Rejection(Reason.BAD_VALUE, f"sample schema version {version}, want 1")
    if label not in (0, 1):
        return Rejection(Reason.BAD_VALUE, f"label {label}")
    return Sample(ts, user, item, label, arm, req, position, propensity, tuple(history))
