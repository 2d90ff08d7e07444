"""The outside world as seen by ingestion: where messages come from and where bad ones go."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from consumers.events import Message, Offsets, Rejection

__all__ = ["DeadLetterSink", "EventSource", "SourceUnavailable", "Topics"]


@dataclass(frozen=True)
class Topics:
    """The contract topics (docs/contracts/events.md)."""

    events: str = "freshrec.events"
    items: str = "freshrec.items"
    dlq: str = "freshrec.dlq"
    samples: str = "freshrec.samples"  # ingest tier -> trainers (see consumers.samples)


class SourceUnavailable(ConnectionError):
    """The broker cannot be reached or refused a request for a transient reason.

    Raised by sources and sinks instead of client-library errors, so the loop can back off
    and retry without importing the client. Nothing was committed by the failed call.
    """


class DeadLetterUnavailable(SourceUnavailable):
    """The dead-letter producer cannot deliver what it holds, while the events may flow.

    Its own class so that readiness and ``freshrec_up`` name the DLQ, not the broker as a
    whole: the letters stay queued and the offsets uncommitted until it recovers.
    """


class EventSource(Protocol):
    """A consumer-group member that hands out batches of raw messages.

    Contract: offsets passed to :meth:`commit` are the *next* offsets to read. A caller
    commits only after the state those messages produced is durable; anything uncommitted
    is redelivered after a crash or rebalance (at-least-once).
    """

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Message]:
        """Block up to ``timeout_s`` for at most ``max_records`` messages ([] on timeout)."""
        ...

    def commit(self, offsets: Offsets) -> None:
        """Synchronously commit ``offsets``; raises if the broker refuses them."""
        ...

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the log end per assigned partition, as last seen by the client."""
        ...

    def take_assignment(self) -> set[tuple[str, int]] | None:
        """The partitions assigned at the last rebalance, once (None: none since asked)."""
        ...

    def take_recreated(self) -> set[str]:
        """Topics found recreated (a new log) since last asked, once.

        Offsets held for them belong to the old log: the caller drops them, so a checkpoint
        never pairs an old log's offset with the new log's id.
        """
        ...

    def resume(self, offsets: Offsets, incarnations: Mapping[str, str]) -> None:
        """A restored state covers everything below ``offsets``: do not hand it out again.

        ``incarnations`` names the log each offset belongs to (topic -> id, from
        :meth:`incarnations` when the state was saved); a topic recreated since is read from
        its start instead, since its offsets belong to another log.
        """
        ...

    def incarnations(self) -> dict[str, str]:
        """The id of the log being read per topic (saved with the offsets; {} if unknown)."""
        ...

    def set_revoke_hook(self, hook: Callable[[], Offsets]) -> None:
        """Call ``hook`` (inside poll) before partitions are taken away; commit what it returns.

        The hook makes state durable and returns the offsets that state covers.
        """
        ...

    def close(self) -> None:
        """Leave the group and release the connection; uncommitted offsets are not committed."""
        ...


class DeadLetterSink(Protocol):
    """Where rejected messages go, byte for byte, with the reason beside them.

    Contract: :meth:`flush` returns only once every message sent so far is durable at the
    sink, so a caller flushes before committing the source offsets that rejected them.
    """

    def send(self, message: Message, rejection: Rejection) -> None:
        """Queue one rejected message (non-blocking where the sink allows)."""
        ...

    def flush(self) -> None:
        """Block until everything sent is durable; raise if any send failed."""
        ...

    def position(self) -> dict[int, int]:
        """Next offset per sink partition once everything sent so far is flushed.

        Saved in the checkpoint, so a restart knows which dead letters came after it.
        """
        ...

    def incarnation(self) -> str:
        """The id of the sink's log the position counts in ("" if unknown); saved with it."""
        ...

    def resume_after(self, position: dict[int, int], incarnation: str = "") -> int:
        """Learn which messages were dead-lettered after ``position`` (a checkpoint's).

        Their redelivery is then not dead-lettered twice. A position counted in another log
        than today's (``incarnation`` differs: the broker lost it) reads the whole log.
        Returns how many were found.
        """
        ...
