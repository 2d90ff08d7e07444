"""The ingest tier's output: labelled samples produced to ``freshrec.samples``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from consumers.base import SourceUnavailable
from consumers.events import Sample
from consumers.kafka_source import connect_client
from consumers.samples import encode_sample

__all__ = ["KafkaSampleSink"]

log = logging.getLogger(__name__)


class KafkaSampleSink:
    """Produces samples as they are joined; :meth:`flush` before offsets are committed.

    At least once: a sample the broker did not acknowledge stays queued and is sent again
    at the next flush, and :meth:`flush` raises :class:`SourceUnavailable` meanwhile, so
    the events behind it are not committed. A repeat is harmless: the record key is the
    sample's identity and trainers drop repeats by it (:mod:`consumers.samples`).
    """

    def __init__(self, topic: str, client_options: Mapping[str, Any]) -> None:
        self.topic = topic
        self._options = {"acks": "all", "linger_ms": 5, **client_options}
        self._producer: KafkaProducer | None = None
        self._inflight: list[tuple[Any, Sample]] = []
        self._unsent: list[Sample] = []
        self.produced = 0

    def send(self, samples: Iterable[Sample]) -> None:
        """Queue samples (never raises: an outage leaves them queued for :meth:`flush`)."""
        for sample in samples:
            try:
                if self._producer is None:
                    self._producer = connect_client(KafkaProducer, self._options)
                key, value = encode_sample(sample)
                self._inflight.append((self._producer.send(self.topic, key=key, value=value),
                                       sample))
            except (KafkaError, SourceUnavailable) as exc:
                log.warning("sample queued until the broker is back: %s", exc)
                self._unsent.append(sample)

    def flush(self) -> None:
        """Wait for every queued sample's acknowledgement; raise if one is missing."""
        unsent, self._unsent = self._unsent, []
        self.send(unsent)
        broken = False
        if self._producer is not None and self._inflight:
            try:
                self._producer.flush(timeout=60)
            except KafkaError as exc:
                log.warning("samples flush failed: %s", exc)
                broken = True
        inflight, self._inflight = self._inflight, []
        for fut, sample in inflight:
            try:
                fut.get(timeout=0 if broken else 30)
                self.produced += 1
            except KafkaError as exc:
                broken = broken or not getattr(exc, "retriable", False)
                self._unsent.append(sample)
        if broken and self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=0)
            self._producer = None
        if self._unsent:
            raise SourceUnavailable(f"{len(self._unsent)} samples not acknowledged")

    def close(self) -> None:
        """Close the producer (without waiting for what is queued)."""
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)
            self._producer = None
