"""In-memory stand-ins for the outside world, for pure-logic unit tests."""

from __future__ import annotations

from collections.abc import Callable

from consumers.events import Message, Offsets, RawMessage


class ListSource:
    """An EventSource over a fixed list of messages, handed out in batches."""

    def __init__(self, messages: list[RawMessage]) -> None:
        self.messages = list(messages)
        self.pos = 0
        self.committed: Offsets = {}
        self.revoke_hook: Callable[[], Offsets] | None = None

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Message]:
        batch = self.messages[self.pos:self.pos + max_records]
        self.pos += len(batch)
        return batch

    def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def set_revoke_hook(self, hook: Callable[[], Offsets]) -> None:
        self.revoke_hook = hook

    def close(self) -> None:
        pass
