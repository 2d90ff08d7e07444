"""Dead-letter records: the rejected bytes plus reason, source topic, partition and offset."""

from __future__ import annotations

from consumers.events import Message, Rejection

__all__ = ["MAX_KEY_BYTES", "MemoryDeadLetters", "Source", "dlq_headers", "dlq_record",
           "source_of"]


#: (topic, partition, offset) of a rejected message: what makes a dead letter unique.
Source = tuple[str, int, int]

#: Keys are cut to this many bytes (a key is an id; a huge one is part of the attack).
MAX_KEY_BYTES = 1024


def dlq_headers(message: Message, rejection: Rejection) -> list[tuple[str, bytes]]:
    """Kafka headers that let an operator find, understand and replay a rejected message."""
    return [
        ("freshrec.reason", rejection.reason.value.encode()),
        ("freshrec.detail", rejection.detail.encode("utf-8", "replace")[:1024]),
        ("freshrec.source.topic", message.topic.encode()),
        ("freshrec.source.partition", str(message.partition).encode()),
        ("freshrec.source.offset", str(message.offset).encode()),
    ]


def dlq_record(message: Message, rejection: Rejection, max_value_bytes: int
               ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a dead letter, cut to fit the DLQ topic.

    The value is kept byte for byte up to ``max_value_bytes``; a longer one is truncated and
    marked with ``freshrec.truncated`` and ``freshrec.original_size`` (the source offset
    still locates the whole message while the source topic retains it).

    >>> from consumers.events import RawMessage, Reason
    >>> key, value, headers = dlq_record(RawMessage("t", 0, 7, b"k", b"x" * 10),
    ...                                  Rejection(Reason.TOO_LARGE, "big"), 4)
    >>> value, dict(headers)["freshrec.original_size"]
    (b'xxxx', b'10')
    """
    value = message.value or b""
    key = message.key
    headers = dlq_headers(message, rejection)
    if len(value) > max_value_bytes or (key is not None and len(key) > MAX_KEY_BYTES):
        headers += [("freshrec.truncated", b"1"),
                    ("freshrec.original_size", str(len(value)).encode())]
        value = value[:max_value_bytes]
        key = key[:MAX_KEY_BYTES] if key is not None else None
    return key, value, headers


def source_of(headers: list[tuple[str, bytes]]) -> Source | None:
    """The source coordinates stamped on a dead letter, if it carries them."""
    h = dict(headers)
    try:
        return (h["freshrec.source.topic"].decode(), int(h["freshrec.source.partition"]),
                int(h["freshrec.source.offset"]))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


class MemoryDeadLetters:
    """In-memory :class:`~consumers.base.DeadLetterSink` for unit tests and dry runs."""

    def __init__(self) -> None:
        self.records: list[tuple[Message, Rejection]] = []

    def send(self, message: Message, rejection: Rejection) -> None:
        """Keep the record in memory."""
        self.records.append((message, rejection))

    def flush(self) -> None:
        """Nothing to wait for."""

    def position(self) -> dict[int, int]:
        """Records held so far (one partition)."""
        return {0: len(self.records)}

    def incarnation(self) -> str:
        """One log, never lost while the process lives."""
        return ""

    def resume_after(self, position: dict[int, int], incarnation: str = "") -> int:
        """Memory does not survive a restart: nothing to recover."""
        return 0
