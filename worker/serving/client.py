"""A small HTTP client of ``freshrec serve``: what an app in Python would write.

The simulator and the demo rank through it, so the closed loop runs through the service
exactly as a real app's requests would. One keep-alive connection per client (not
thread-safe: one client per thread).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from model_store.base import StoreUnavailable
from worker.serving.service import Slate

__all__ = ["HttpRankClient"]


class HttpRankClient:
    """``rank()`` with the signature of :meth:`RankService.rank`, over HTTP.

    Raises :class:`StoreUnavailable` when the service cannot answer (503, refused, timed
    out), so a caller falls back to a default order exactly as it would on a Redis outage
    in-process.
    """

    def __init__(self, base_url: str, timeout_s: float = 2.0, token: str | None = None
                 ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout_s = timeout_s
        self._headers = {"content-type": "application/json"}
        if token is not None:
            self._headers["authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def rank(self, user_id: str, recent_items: Sequence[str], candidates: Sequence[str],
             k: int | None = None, arm: str | None = None,
             request_id: str | None = None) -> Slate:
        """POST /v1/rank; the answer as a :class:`Slate`."""
        body: dict[str, object] = {"user_id": user_id, "recent_items": list(recent_items),
                                   "candidates": list(candidates)}
        for key, value in (("k", k), ("arm", arm), ("request_id", request_id)):
            if value is not None:
                body[key] = value
        status, data = self._post("/v1/rank", json.dumps(body).encode())
        if status != 200:
            if status == 503:
                raise StoreUnavailable(f"freshrec serve: {data.get('detail')}")
            raise ValueError(f"freshrec serve answered {status}: {data.get('detail')}")
        items = data["items"]
        return Slate(arm=data["arm"], version=data["model_version"],
                     items=[it["item_id"] for it in items],
                     scores=[it["score"] for it in items],
                     propensities=[it["propensity"] for it in items],
                     policy=data["policy"], request_id=data["request_id"])

    def _post(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        for attempt in range(2):  # a kept-alive connection the server closed: reconnect once
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port,
                                                            timeout=self.timeout_s)
                self._conn.request("POST", path, body, self._headers)
                resp = self._conn.getresponse()
                return resp.status, json.loads(resp.read() or b"{}")
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt:
                    raise StoreUnavailable(f"freshrec serve unreachable: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop the connection (the next call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
