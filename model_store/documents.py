"""Small documents in Redis (the guarded-ramp state and its lease), outages translated.

The ramp controller only needs ``GET`` and ``SET`` (with ``NX``/``PX`` for a lease); this
wrapper gives it those with :class:`model_store.base.StoreUnavailable` on an outage, like
every other store here.
"""

from __future__ import annotations

from typing import Any

from model_store.redis_store import translate_errors

__all__ = ["RedisDocuments"]


@translate_errors
class RedisDocuments:
    """``get``/``set`` of byte documents on a Redis (or Redis Cluster) client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, name: str) -> bytes | None:
        """The document, or None."""
        value: bytes | None = self.client.get(name)
        return value

    def set(self, name: str, value: bytes, **kwargs: Any) -> Any:
        """Store a document; ``nx=True, px=ms`` takes a lease (None if it is held)."""
        return self.client.set(name, value, **kwargs)
