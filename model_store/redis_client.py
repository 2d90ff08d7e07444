"""The Redis client: connecting, and telling an outage from a bug.

Every Redis-backed class of ``model_store`` wraps its public methods with
:func:`translate_errors`, so callers handle one exception of their own,
:class:`~model_store.base.StoreUnavailable`, for anything that a retry later can fix.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from model_store.base import StoreUnavailable

__all__ = ["connect", "is_readonly", "replicated_pipeline", "run_replicated",
           "run_script", "translate_errors"]

_T = TypeVar("_T")
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                redis.exceptions.ClusterDownError, redis.exceptions.ClusterError)
_MOVED = (redis.exceptions.MovedError, redis.exceptions.AskError,
          redis.exceptions.TryAgainError)


def is_readonly(exc: redis.ResponseError) -> bool:
    """Whether Redis refused a write because the node is a replica now.

    A failover under way, or over with the client still on the old master: like an outage,
    the call is retried later, on a fresh connection. Plain commands raise ReadOnlyError;
    a write inside a script comes back as a script error quoting ``-READONLY``.
    """
    return isinstance(exc, redis.exceptions.ReadOnlyError) or "READONLY" in str(exc)


def translate_errors(cls: type[_T]) -> type[_T]:
    """Make every public method raise :class:`StoreUnavailable` when Redis is unreachable.

    Callers then handle one exception of our own, and nothing outside this module needs
    to import redis to recognise an outage.
    """
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not callable(fn):
            continue

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except _UNAVAILABLE as exc:
                    raise StoreUnavailable(f"Redis unavailable: {_printable(exc)}") from exc
                except redis.ResponseError as exc:
                    if not is_readonly(exc):
                        raise
                    _reconnect(getattr(args[0], "client", None) if args else None)
                    raise StoreUnavailable(f"Redis unavailable: {_printable(exc)}") from exc
            return call

        setattr(cls, name, wrap(fn))
    return cls


def replicated_pipeline(client: Any, key: str) -> Any:
    """A pipeline on one connection to the node that holds ``key``'s slot.

    ``WAIT`` counts the replicas that have the writes of *its own connection*, so the
    writes and their ``WAIT`` must share one: a pooled client would hand ``WAIT`` whichever
    connection was free. In a Cluster every key one operation touches shares a hash tag,
    so the whole operation lives on that node.
    """
    locate = getattr(client, "get_node_from_key", None)
    node = client if locate is None else locate(key).redis_connection
    return node.pipeline(transaction=False)


def run_replicated(pipe: Any, client: Any, replicas: int, timeout_s: float) -> list[Any]:
    """Execute ``pipe``, then wait until ``replicas`` replicas hold its writes.

    Redis replicates asynchronously: a master lost right after it acknowledged a write
    takes the write with it when its replica is promoted. Fewer replicas than asked for
    within ``timeout_s`` is an outage (:class:`StoreUnavailable`), so the caller retries
    the write, which is idempotent everywhere it is used (counter tokens, version names).
    """
    pipe.execute_command("WAIT", replicas, max(1, int(timeout_s * 1000)))
    try:
        out = pipe.execute()
    except _MOVED as exc:  # the slot moved (a failover): reached directly, no redirect
        _refresh_routes(client)
        raise StoreUnavailable(f"Redis unavailable: slot moved: {_printable(exc)}") from exc
    except (*_UNAVAILABLE, redis.ResponseError):
        _refresh_routes(client)
        raise
    if int(out[-1]) < replicas:
        raise StoreUnavailable(f"Redis unavailable: {out[-1]} of {replicas} replicas "
                               f"acknowledged the write within {timeout_s} s")
    return list(out[:-1])


def run_script(script: Any, client: Any, keys: list[str], args: list[Any], replicas: int,
               timeout_s: float) -> Any:
    """Run a registered Lua script; with ``replicas``, wait for them (:func:`run_replicated`)."""
    if not replicas:
        return script(keys=keys, args=args)
    pipe = replicated_pipeline(client, keys[0])
    script(keys=keys, args=args, client=pipe)
    return run_replicated(pipe, client, replicas, timeout_s)[0]


def _refresh_routes(client: Any) -> None:
    """After a failure on a node reached directly: learn the Cluster's slots afresh.

    A failover moves the slots to the promoted replica; the Cluster client learns that by
    itself only on commands routed through it.
    """
    nodes = getattr(client, "nodes_manager", None)
    if nodes is not None:
        with contextlib.suppress(Exception):
            nodes.initialize()
    else:
        _reconnect(client)


def _printable(exc: Exception, limit: int = 300) -> str:
    """An error's text fit for one log line.

    A failed pipeline quotes its commands, whose arguments may be binary (a hand-over
    state, vector bytes): control characters are escaped and the text is cut short.
    """
    text = str(exc)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("unicode_escape").decode("ascii")


def _reconnect(client: Any) -> None:
    """Drop a client's pooled connections.

    The next call connects afresh, to wherever its address points now (a failover that
    moved a DNS name or a virtual IP).
    """
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        with contextlib.suppress(Exception):
            pool.disconnect()


def connect(url: str, password: str | None = None, timeout_s: float = 10.0,
            cluster: bool = False) -> Any:
    """One pooled client for ``url``; the vector store and the counters share it.

    ``cluster``: ``url`` is any node of a Redis Cluster; the client discovers the others
    and routes each command to its slot's node. Every key one operation touches carries
    the same hash tag (see the layout above), so scripts and transactions stay on one node.

    Commands fail after ``timeout_s`` (connecting: at most 5 s) rather than hanging when
    Redis is unreachable, so a caller can retry with backoff instead of blocking the
    ingestion loop; the serving side passes a sub-second timeout and answers 503.
    """
    kwargs: dict[str, Any] = {"socket_connect_timeout": min(5.0, timeout_s),
                              "socket_timeout": timeout_s, "health_check_interval": 30}
    if password is not None:
        kwargs["password"] = password
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)
