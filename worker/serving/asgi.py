"""ASGI plumbing of ``freshrec serve``: JSON answers, body limits, the ids query string.

Kept apart from the routes (:mod:`worker.serving.http`) so each module has one job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

__all__ = ["ASGI", "Answer", "BodyLimit", "Receive", "Scope", "Send", "encode", "query_ids",
           "read_body", "send_json"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]



class Answer(Exception):
    """An answer other than 200 from the hot path: status, detail, extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def encode(payload: Any) -> bytes:
    """JSON bytes; numpy arrays included.

    orjson writes float32 arrays in their shortest exact form: half the bytes and half the
    time of formatting them as float64, and they parse back to the same float32.
    """
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def query_ids(raw: bytes, limit: int) -> list[str]:
    """The ``ids`` values of a query string (form style, repeated), validated.

    >>> query_ids(b"ids=a&x=1&ids=b%2Cc&ids=d+e", 10)
    ['a', 'b,c', 'd e']
    """
    parts = raw.split(b"&")
    if b"%" not in raw and b"+" not in raw:  # plain ids: decode in bulk (most requests)
        try:
            out = [p[4:].decode() for p in parts if p.startswith(b"ids=")]
        except UnicodeDecodeError:
            raise Answer(422, "query.ids: not UTF-8") from None
    else:
        out = []
        for part in parts:
            name, _, value = part.partition(b"=")
            if name != b"ids":
                continue
            try:
                out.append(unquote_to_bytes(value.replace(b"+", b" ")).decode())
            except UnicodeDecodeError:
                raise Answer(422, "query.ids: not UTF-8") from None
    if out and not 1 <= min(map(len, out)) <= max(map(len, out)) <= 256:
        raise Answer(422, "query.ids: each id must have 1 to 256 characters")
    if not out:
        raise Answer(422, "query.ids: at least one id is required (repeat ids=...)")
    if len(out) > limit:
        raise Answer(422, f"query.ids: at most {limit} ids per request, got {len(out)}")
    return out


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by header or while reading."""

    def __init__(self, app: ASGI, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_length(scope) > self.limit:
            await send_json(send, 413, {"detail": f"body over {self.limit} bytes"})
            return
        seen = 0
        started = False

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        async def tracking(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _TooLarge:
            if not started:
                await send_json(send, 413, {"detail": f"body over {self.limit} bytes"})




async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; :class:`Answer` 413 past ``limit`` bytes, 400 if cut off."""
    if declared_length(scope) > limit:
        raise Answer(413, f"body over {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Answer(400, "client went away before the body arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Answer(413, f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


async def send_json(send: Send, status: int, payload: Any,
                headers: dict[str, str] | None = None) -> None:
    """A whole JSON response (``payload`` as bytes: JSON encoded already)."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
