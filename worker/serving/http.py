"""``freshrec serve``: item vectors and ranked slates over HTTP, for apps in any language.

Two layers on uvicorn. The two hot routes, ``GET /v1/arms/{arm}/vectors`` and
``POST /v1/rank``, are answered by a thin ASGI layer (:class:`_Server`): measured on a
2-core machine, routing them through FastAPI cost about 0.85 ms a request, as much as the
whole Redis read of 100 vectors. Their request and answer models are still the pydantic
models below (validated by pydantic-core from the raw JSON), and FastAPI still declares
them, so ``/openapi.json`` describes what is served; FastAPI answers everything else
(health, readiness, metrics, the schema, 404/405).

The Redis client is the blocking one the worker uses, called from the event loop: a read
is a single sub-millisecond round trip, cheaper than a hop to a thread, and one process
answers one request at a time (run more processes for more cores). A Redis call that
fails answers 503 within ``serve.redis_timeout_s`` and the next request reconnects.

Every error is a JSON ``{"detail": "..."}`` with a 4xx that says what to fix, or 503 while
Redis is unreachable; a body over ``serve.max_body_bytes`` is refused (413) unread.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations at
# runtime, and the rank request model is built per app from its limits.
import hmac
import time
from collections.abc import Callable, MutableMapping
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from model_store.base import StoreUnavailable
from worker.config import ServeSettings
from worker.serving.asgi import (
    ASGI,
    Answer,
    BodyLimit,
    Receive,
    Scope,
    Send,
    encode,
    query_ids,
    read_body,
    send_json,
)
from worker.serving.metrics import VECTORS_ROUTE, ServeMetrics, route_of
from worker.serving.service import RankService, UnknownArm

__all__ = ["create_app"]

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
VERSION_HEADER = "X-Freshrec-Version"
_T = TypeVar("_T")

class Problem(BaseModel):
    """Every error answer."""

    detail: str


class VectorsAnswer(BaseModel):
    """Vectors of one consistent version; ``null`` for ids that version does not have."""

    arm: str
    version: str | None
    dim: int
    vectors: dict[str, list[float] | None]


class RankedItem(BaseModel):
    """One shown item: its model score and the probability the policy put it in its slot."""

    item_id: str
    score: float | None
    propensity: float


class RankAnswer(BaseModel):
    """A slate to show.

    Stamp ``arm``, ``request_id``, ``model_version``, each item's position and propensity
    on the impression events.
    """

    arm: str
    model_version: str | None
    policy: str
    request_id: str
    items: list[RankedItem]


def _rank_request(cfg: ServeSettings) -> type[BaseModel]:
    class RankRequest(BaseModel):
        """A user, what they engaged with lately (newest first), and what could be shown."""

        model_config = ConfigDict(extra="forbid")
        user_id: ItemId
        recent_items: list[ItemId] = Field(default_factory=list, max_length=cfg.max_recent)
        candidates: list[ItemId] = Field(min_length=1, max_length=cfg.max_candidates)
        k: int = Field(cfg.default_k, ge=1, le=cfg.max_candidates)
        arm: ItemId | None = None  # None: the user's assigned arm
        request_id: ItemId | None = None  # None: the service makes one

    return RankRequest


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (404, 413, 422, 503)}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = payload if isinstance(payload, bytes) else encode(payload)
    return Response(body, status, headers, media_type="application/json")


def _describe(errors: Any, prefix: str) -> str:
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in (prefix, *err.get("loc", ())) if p != "")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
    return "; ".join(parts) or "invalid request"


class _Handlers:
    """The two hot operations: raw request in, (payload, headers) out, or :class:`Answer`."""

    def __init__(self, service: RankService, cfg: ServeSettings, metrics: ServeMetrics,
                 rank_model: type[BaseModel]) -> None:
        self.service, self.cfg, self.metrics, self.rank_model = service, cfg, metrics, rank_model

    def vectors(self, arm: str, query: bytes) -> tuple[Any, dict[str, str]]:
        if not 1 <= len(arm) <= 256 or "/" in arm:
            raise Answer(404, f"unknown arm {arm!r}")
        ids = list(dict.fromkeys(query_ids(query, self.cfg.max_ids)))  # each id once
        version, dim, rows = self._store(lambda: self.service.vectors_json(arm, ids))
        self.metrics.served(arm, version)
        # The answer assembled from each row's JSON (cached with the row): the schema's
        # {"arm", "version", "dim", "vectors": {id: [floats] | null}}, byte for byte.
        body = b"".join((b'{"arm":', encode(arm), b',"version":', encode(version),
                         b',"dim":', str(dim).encode(), b',"vectors":{',
                         b",".join(encode(i) + b":" + r for i, r in zip(ids, rows, strict=True)),
                         b"}}"))
        return body, {VERSION_HEADER: version} if version else {}

    def rank(self, body: bytes) -> tuple[Any, dict[str, str]]:
        try:
            req: Any = self.rank_model.model_validate_json(body)
        except ValidationError as exc:
            raise Answer(422, _describe(exc.errors(), "body")) from None
        slate = self._store(lambda: self.service.rank(
            req.user_id, req.recent_items, req.candidates, req.k, req.arm, req.request_id))
        self.metrics.served(slate.arm, slate.version)
        items = [{"item_id": i, "score": s, "propensity": p}
                 for i, s, p in zip(slate.items, slate.scores, slate.propensities, strict=True)]
        headers = {"X-Request-Id": slate.request_id}
        if slate.version:
            headers[VERSION_HEADER] = slate.version
        return ({"arm": slate.arm, "model_version": slate.version, "policy": slate.policy,
                 "request_id": slate.request_id, "items": items}, headers)

    def _store(self, call: Callable[[], _T]) -> _T:
        try:
            got = call()
        except UnknownArm as exc:
            raise Answer(404, str(exc)) from None
        except (StoreUnavailable, RuntimeError) as exc:  # RuntimeError: pointer kept moving
            self.metrics.redis_up.set(0)
            raise Answer(503, f"vector store unavailable ({type(exc).__name__}); retry "
                          "shortly", {"Retry-After": "1"}) from None
        self.metrics.redis_up.set(1)
        return got


def create_app(service: RankService, cfg: ServeSettings,
               ping: Callable[[], bool] | None = None,
               metrics: ServeMetrics | None = None) -> Any:
    """The ASGI application: the hot routes' layer in front of FastAPI.

    Args:
        service: the serving rules over the store.
        cfg: limits and defaults.
        ping: readiness probe of the store (True = reachable); None: always ready.
        metrics: where to count; a new registry when None.
    """
    metrics = metrics or ServeMetrics()
    handlers = _Handlers(service, cfg, metrics, _rank_request(cfg))
    api = FastAPI(title="freshrec serve", version="1", docs_url=None, redoc_url=None,
                  description="Fresh item vectors and ranked slates from freshrec's store.")

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return _json({"detail": _describe(exc.errors(), "")}, 422)

    ids_param = {"name": "ids", "in": "query", "required": True, "style": "form",
                 "explode": True, "description": "item ids; repeat the parameter",
                 "schema": {"type": "array", "minItems": 1, "maxItems": cfg.max_ids,
                            "items": {"type": "string", "minLength": 1, "maxLength": 256}}}

    # The two hot routes are answered by _Server before FastAPI sees them; declared here
    # so that /openapi.json describes them (and answered the same way if reached).
    @api.get("/v1/arms/{arm}/vectors", response_model=VectorsAnswer, responses=_ERRORS,
             openapi_extra={"parameters": [ids_param]})
    def vectors(arm: Annotated[str, Path(min_length=1, max_length=256)],
                request: Request) -> Response:
        """Vectors of ``ids`` (repeat the parameter) from the arm's current version."""
        return _respond(lambda: handlers.vectors(arm, request.scope["query_string"]))

    rank_model: Any = handlers.rank_model

    @api.post("/v1/rank", response_model=RankAnswer, responses=_ERRORS)
    def rank(body: rank_model) -> Response:
        """Rank ``candidates`` for ``user_id`` through the user's arm and its policy."""
        return _respond(lambda: handlers.rank(body.model_dump_json().encode()))

    @api.get("/healthz", responses=_ERRORS)
    async def healthz() -> Response:
        """The process answers (an outage of Redis is not a reason to restart it)."""
        return _json({"ok": True})

    @api.get("/readyz", responses=_ERRORS)
    def readyz() -> Response:
        """Ready while the vector store answers a ping (503 otherwise)."""
        up = ping() if ping is not None else True
        metrics.redis_up.set(int(up))
        return _json({"ready": up}, 200 if up else 503)

    @api.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return _Server(BodyLimit(api, cfg.max_body_bytes), handlers, metrics, cfg.max_body_bytes,
                   cfg.token())


def _respond(call: Callable[[], tuple[Any, dict[str, str]]]) -> Response:
    try:
        payload, headers = call()
    except Answer as answer:
        return _json({"detail": answer.detail}, answer.status, answer.headers)
    return _json(payload, 200, headers)


#: Routes a probe or a scraper reaches without the API token.
OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class _Server:
    """Answers the hot routes itself, passes the rest on; times and counts every request.

    With a token, every route but :data:`OPEN_ROUTES` needs ``Authorization: Bearer
    <token>``; the comparison is constant-time (``hmac.compare_digest``), so the answer's
    timing says nothing about how much of a guess was right.
    """

    def __init__(self, app: ASGI, handlers: _Handlers, metrics: ServeMetrics,
                 limit: int, token: str | None = None) -> None:
        self.app, self.handlers, self.metrics, self.limit = app, handlers, metrics, limit
        self._expected = None if token is None else f"Bearer {token}".encode()

    def _authorized(self, scope: Scope) -> bool:
        if self._expected is None:
            return True
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path, method = scope.get("path", ""), scope.get("method", "")
        route = route_of(path)
        status = 500
        try:
            if route not in OPEN_ROUTES and not self._authorized(scope):
                raise Answer(401, "missing or wrong bearer token (Authorization: Bearer "
                             "<serve.api_token>)", {"WWW-Authenticate": "Bearer"})
            if route == VECTORS_ROUTE and method == "GET":
                arm = path[len("/v1/arms/"):-len("/vectors")]
                status = await self._answer(send, lambda: self.handlers.vectors(
                    arm, scope.get("query_string", b"")))
            elif route == "/v1/rank" and method == "POST":
                body = await read_body(scope, receive, self.limit)
                status = await self._answer(send, lambda: self.handlers.rank(body))
            else:
                async def tracking(message: MutableMapping[str, Any]) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = int(message["status"])
                    await send(message)

                await self.app(scope, receive, tracking)
        except Answer as answer:
            status = answer.status
            await send_json(send, status, {"detail": answer.detail}, answer.headers)
        finally:
            self.metrics.observe(route, status, time.perf_counter() - start)

    async def _answer(self, send: Send, call: Callable[[], tuple[Any, dict[str, str]]]
                      ) -> int:
        payload, headers = call()
        await send_json(send, 200, payload, headers)
        return 200
