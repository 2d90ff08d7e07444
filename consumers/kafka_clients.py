"""kafka-python clients: connecting with one clear error, a plain producer, topic admin."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from consumers.base import SourceUnavailable

__all__ = ["KafkaEventProducer", "connect_client", "ensure_topics"]

_C = TypeVar("_C")


def connect_client(client: Callable[..., _C], options: Mapping[str, Any]) -> _C:
    """Build a kafka-python client; an unreachable broker is :class:`SourceUnavailable`."""
    try:
        return client(**options)
    except KafkaError as exc:  # kafka-python gives up bootstrapping after ~30 s
        servers = options.get("bootstrap_servers")
        where = ",".join(servers) if isinstance(servers, list) else str(servers)
        raise SourceUnavailable(f"cannot reach Kafka at {where} ({exc})") from exc


class KafkaEventProducer:
    """Plain producer for the simulator and benchmarks: ``emit(topic, key, value)``."""

    def __init__(self, client_options: Mapping[str, Any], linger_ms: int = 5) -> None:
        self._producer = connect_client(KafkaProducer, {"linger_ms": linger_ms, "acks": 1,
                                                  **client_options})

    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue one record (non-blocking unless the buffer is full)."""
        self._producer.send(topic, key=key, value=value)

    def flush(self) -> None:
        """Block until everything queued is acknowledged."""
        self._producer.flush()

    def close(self) -> None:
        """Flush and close."""
        self._producer.flush()
        self._producer.close()


def ensure_topics(client_options: Mapping[str, Any], topics: Mapping[str, int]) -> None:
    """Create the given topics (name -> partitions) if missing; existing ones are left alone."""
    admin = connect_client(KafkaAdminClient, dict(client_options))
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, parts, 1) for name, parts in topics.items() if name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # a racing creator won
                admin.create_topics(new)
    finally:
        admin.close()
