"""Dead-letter records: the rejected bytes plus reason, source topic, partition and offset."""

from __future__ import annotations

from consumers.events import Message, Rejection

__all__ = ["dlq_headers", "MemoryDeadLetters"]


def dlq_headers(message: Message, rejection: Rejection) -> list[tuple[str, bytes]]:
    """Kafka headers that let an operator find, understand and replay a rejected message."""
    return [
        ("freshrec.reason", rejection.reason.value.encode()),
        ("freshrec.detail", rejection.detail.encode("utf-8", "replace")[:1024]),
        ("freshrec.source.topic", message.topic.encode()),
        ("freshrec.source.partition", str(message.partition).encode()),
        ("freshrec.source.offset", str(message.offset).encode()),
    ]


class MemoryDeadLetters:
    """In-memory :class:`~consumers.base.DeadLetterSink` for unit tests and dry runs."""

    def __init__(self) -> None:
        self.records: list[tuple[Message, Rejection]] = []

    def send(self, message: Message, rejection: Rejection) -> None:
        """Keep the record in memory."""
        self.records.append((message, rejection))

    def flush(self) -> None:
        """Nothing to wait for."""
