"""Each events partition's pending joins in Redis, for its next owner (see consumers.handover).

Layout (prefix ``p``, consumer group ``g``)::

    p:handover:g:<topic>:<partition>   hash   offset -> the offset the state holds up to
                                              state  -> MessagePack [pending rows, histories]

One key per partition, written with one ``HSET`` (both fields at once: a reader never
sees a state with another state's offset). Keys are on whichever Cluster node owns their
slot; no operation spans two of them. Its size follows the partition's pending
impressions, which the join window bounds.
"""

from __future__ import annotations

from typing import Any

from model_store.redis_store import translate_errors

__all__ = ["RedisHandoverStore"]


@translate_errors
class RedisHandoverStore:
    """Implements :class:`consumers.handover.HandoverStore` on a Redis (or Cluster) client."""

    def __init__(self, client: Any, prefix: str, group: str) -> None:
        self.client = client
        self.base = f"{prefix}:handover:{group}"

    def save(self, states: dict[tuple[str, int], tuple[int, bytes]]) -> None:
        """Replace each partition's state and offset (one pipeline round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for (topic, partition), (offset, blob) in states.items():
            pipe.hset(self._key(topic, partition), mapping={"offset": offset, "state": blob})
        pipe.execute()

    def load(self, part: tuple[str, int]) -> tuple[int, bytes] | None:
        """The partition's last saved (offset, state), or None."""
        got = self.client.hgetall(self._key(*part))
        if not got or b"state" not in got:
            return None
        return int(got[b"offset"]), bytes(got[b"state"])

    def _key(self, topic: str, partition: int) -> str:
        return f"{self.base}:{topic}:{partition}"
