"""Item vectors per arm and version, with an atomic pointer flip.

Layout (prefix ``p``, arm ``a``; the ``{p:a}`` hash tag keeps one arm's keys in one
Redis Cluster slot, so its Lua scripts stay atomic there too):

    p:{p:a}:current          string  the version serving reads
    p:{p:a}:versions         list    retained versions, newest first
    p:{p:a}:pinned           string  set by rollback: publishing is refused until unpinned
    p:{p:a}:layers           set     versions whose rows are stored (retained + ancestors)
    p:{p:a}:vec:<version>    hash    item_id -> little-endian float32 bytes
    p:{p:a}:meta:<version>   hash    dim, dtype, item_count, created_at, model_version, ...

A delta version's ``vec`` hash holds only the rows it changed; ``meta`` field
``base_layers`` lists its ancestors (parent first), and a reader takes each item's row
from the first layer that has it. Retention keeps every layer a retained version reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import redis

from model_store.base import PinnedError, StaleParentError, VersionInfo
from model_store.redis_client import (
    connect,
    is_readonly,
    replicated_pipeline,
    run_replicated,
    run_script,
    translate_errors,
)
from model_store.redis_scripts import FLIP, ROLLBACK

__all__ = ["RedisVectorStore", "connect", "translate_errors"]

_INFO_CACHE = 256  # cached version metadata entries before the cache is cleared
_CHUNK = 4000  # ids per HSET/HMGET call: under Lua's unpack limit, small enough not to stall


@translate_errors
class RedisVectorStore:
    """:class:`model_store.base.VectorStore` on Redis (or anything speaking its protocol).

    Args:
        client: a ``redis.Redis`` built by the caller (URL, password, TLS are its business).
        prefix: key prefix, default ``freshrec``.
        retention: versions kept per arm (>= 2 so a rollback target exists).
        replicas: replicas that must hold a version's rows before its flip, and the flip
            before the publish returns (``redis.wait_replicas``); 0 trusts the master.
        replica_wait_s: how long to wait for them before reporting an outage.
    """

    def __init__(self, client: redis.Redis, prefix: str = "freshrec", retention: int = 3,
                 replicas: int = 0, replica_wait_s: float = 2.0) -> None:
        if retention < 2:
            raise ValueError("retention must be >= 2")
        self.client: Any = client  # redis.Redis or a cluster client; bytes responses
        self.replicas, self.replica_wait_s = replicas, replica_wait_s
        self.prefix = prefix
        self.retention = retention
        self._flip = client.register_script(FLIP)
        self._rollback = client.register_script(ROLLBACK)
        # A version's vectors and metadata never change once written, so its metadata is
        # cached by (arm, version), and the last version seen per arm is where a lookup
        # reads first: one round trip while the pointer stays, and a flip or rollback is
        # seen by the very next lookup (see _lookup_once).
        self._infos: dict[tuple[str, str], VersionInfo] = {}
        self._last: dict[str, str] = {}

    def base(self, arm: str) -> str:
        """Key prefix of one arm, hash tag included."""
        return f"{self.prefix}:{{{self.prefix}:{arm}}}:"

    def publish(self, arm: str, version: str, ids: Sequence[str], vectors: np.ndarray,
                info: VersionInfo, parent: str | None = None) -> None:
        """Write the version in chunks (invisible until the flip), then flip atomically.

        With ``parent``, only ``ids`` are written and the flip checks, in the same script,
        that ``parent`` is still current.
        """
        base = self.base(arm)
        if self.client.exists(base + "pinned"):
            raise PinnedError(f"arm {arm!r} is pinned by a rollback; unpin to publish")
        if self.client.exists(f"{base}meta:{version}", f"{base}vec:{version}"):
            if self._in_use(arm, version):
                raise ValueError(f"arm {arm!r}: version {version!r} exists; names are not "
                                 "reused")
            # Written by a publish that never reached its flip (Redis lost mid-publish, or
            # the publisher killed): no reader ever saw it, and the arm has one publisher.
            self.client.unlink(f"{base}vec:{version}", f"{base}meta:{version}")
        base_layers = ""
        if parent is not None:
            parent_info = self.info(arm, parent)
            if parent_info is None:
                raise StaleParentError(f"arm {arm!r}: parent {parent!r} is gone")
            base_layers = ",".join(parent_info.layers())
        info = replace(info, base_layers=base_layers)
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        if vecs.ndim != 2 or vecs.shape[0] != len(ids):
            raise ValueError(f"vectors shape {vecs.shape} does not match {len(ids)} ids")
        raw = vecs.tobytes()
        row = vecs.shape[1] * 4
        vec_key = f"{base}vec:{version}"
        # With replicas to wait for, rows, flip and WAIT share one connection to the arm's
        # node: a promoted replica then never holds a flip without the rows it points at.
        pipe = (replicated_pipeline(self.client, base) if self.replicas
                else self.client.pipeline(transaction=False))
        # Listed among the arm's layers before a byte is written: if Redis goes away before
        # the flip, the next flip's clean-up deletes what was written (the arm has one
        # publisher), so an outage mid-publish leaves no orphaned version behind.
        pipe.sadd(base + "layers", version)
        for start in range(0, len(ids), _CHUNK):
            stop = min(start + _CHUNK, len(ids))
            pipe.hset(vec_key, mapping={ids[k]: raw[k * row:(k + 1) * row]
                                        for k in range(start, stop)})
        pipe.hset(f"{base}meta:{version}", mapping=_info_to_hash(info))
        if self.replicas:
            run_replicated(pipe, self.client, self.replicas, self.replica_wait_s)
        else:
            pipe.execute()
        flip_keys = [base + "current", base + "versions", base + "pinned", base + "layers"]
        flip_args = [version, self.retention, base, parent or ""]
        try:
            run_script(self._flip, self.client, flip_keys, flip_args, self.replicas,
                       self.replica_wait_s)
        except redis.ResponseError as exc:
            if is_readonly(exc):
                raise  # a failover: nothing ran; the next flip's clean-up removes the keys
            self.client.unlink(vec_key, f"{base}meta:{version}")
            if "PINNED" in str(exc):
                raise PinnedError(f"arm {arm!r} was pinned during publish") from exc
            if "STALE" in str(exc):
                raise StaleParentError(f"arm {arm!r}: {parent!r} is no longer current") from exc
            raise

    def lookup(self, arm: str, ids: Sequence[str]) -> tuple[str | None, np.ndarray, np.ndarray]:
        """Pointer and vectors read in one transaction; retried if the pointer moved."""
        for _ in range(5):
            got = self._lookup_once(arm, list(ids))
            if got is not None:
                return got
        raise RuntimeError(f"arm {arm!r}: versions changed under five lookups in a row")

    def _lookup_once(self, arm: str, ids: list[str]
                     ) -> tuple[str | None, np.ndarray, np.ndarray] | None:
        """One MULTI/EXEC: GET the pointer and HMGET the ids from the version read last.

        If the pointer still names that version, the vectors are that version's, whole
        (the transaction is atomic and a current version's layers are never deleted); if
        it moved, the next attempt reads the version it names. Cheaper than a Lua script
        doing the same: Redis does not copy the replies through Lua tables. A delta
        version costs one HMGET per layer.
        """
        base = self.base(arm)
        guess = self._last.get(arm)
        layers = []
        if guess is not None:
            guess_info = self.info(arm, guess)
            if guess_info is None:  # retired: read the pointer alone
                guess = None
                del self._last[arm]
            else:
                layers = guess_info.layers()
        pipe = self.client.pipeline(transaction=True)
        pipe.get(base + "current")
        for layer in layers:
            for start in range(0, len(ids), _CHUNK):
                pipe.hmget(f"{base}vec:{layer}", ids[start:start + _CHUNK])
        version_b, *chunks = pipe.execute()
        if not version_b:
            return None, np.zeros((len(ids), 0), np.float32), np.zeros(len(ids), bool)
        version = version_b.decode()
        if version != guess:
            self._last[arm] = version
            return None if ids else (version, np.zeros((0, 0), np.float32), np.zeros(0, bool))
        info = self.info(arm, version)
        if info is None or info.dim == 0:
            return None
        per_layer = len(chunks) // max(len(layers), 1)
        values = [v for chunk in chunks[:per_layer] for v in chunk]
        for k in range(1, len(layers)):  # older layers fill what newer ones lack
            older = [v for chunk in chunks[k * per_layer:(k + 1) * per_layer] for v in chunk]
            values = [v if v is not None else o for v, o in zip(values, older, strict=True)]
        found = np.fromiter((bool(v) for v in values), bool, len(values))
        rows = np.frombuffer(b"".join(v for v in values if v), "<f4").reshape(-1, info.dim)
        if found.all():
            return version, rows.copy(), found
        out = np.full((len(ids), info.dim), np.nan, np.float32)
        out[found] = rows
        return version, out, found

    def current(self, arm: str) -> VersionInfo | None:
        """Metadata of the arm's current version."""
        base = self.base(arm)
        version = self.client.get(base + "current")
        if not version:
            return None
        data = self.client.hgetall(f"{base}meta:{version.decode()}")
        return _info_from_hash(data) if data else None

    def info(self, arm: str, version: str) -> VersionInfo | None:
        """Metadata of one version (cached: a version's metadata never changes)."""
        key = (arm, version)
        got = self._infos.get(key)
        if got is None:
            data = self.client.hgetall(f"{self.base(arm)}meta:{version}")
            if not data:
                return None
            got = _info_from_hash(data)
            if len(self._infos) >= _INFO_CACHE:
                self._infos.clear()  # retired versions: refetching the live ones is cheap
            self._infos[key] = got
        return got

    def _in_use(self, arm: str, version: str) -> bool:
        """Whether ``version`` is retained, or a layer a retained version reads."""
        for retained in self.versions(arm):
            info = self.info(arm, retained)
            if retained == version or (info is not None and version in info.layers()):
                return True
        return False

    def versions(self, arm: str) -> list[str]:
        """Retained versions, newest first."""
        return [v.decode() for v in self.client.lrange(self.base(arm) + "versions", 0, -1)]

    def rollback(self, arm: str) -> str:
        """Flip to the previous version and pin the arm there."""
        base = self.base(arm)
        keys = [base + "current", base + "versions", base + "pinned"]
        try:
            got = run_script(self._rollback, self.client, keys, [], self.replicas,
                             self.replica_wait_s)
        except redis.ResponseError as exc:
            if is_readonly(exc):
                raise  # a failover: an outage, not a refusal
            raise LookupError(f"arm {arm!r}: cannot roll back ({exc})") from exc
        return bytes(got).decode()

    def unpin(self, arm: str) -> None:
        """Allow publishing again."""
        self.client.delete(self.base(arm) + "pinned")

    def pinned(self, arm: str) -> str | None:
        """The version a rollback pinned the arm to, if any."""
        got = self.client.get(self.base(arm) + "pinned")
        return got.decode() if got else None

    def version_vectors(self, arm: str, version: str) -> tuple[list[str], np.ndarray]:
        """Every item of one retained version (for offline use: off-policy evaluation).

        Raises:
            LookupError: the version is not retained (or a layer of it was retired).
        """
        info = self.info(arm, version)
        got = self._read_layers(arm, info) if info is not None else None
        if got is None:
            raise LookupError(f"arm {arm!r}: version {version!r} is not retained; "
                              f"retained: {self.versions(arm)}")
        return got

    def all_vectors(self, arm: str) -> tuple[str | None, list[str], np.ndarray]:
        """Every item of the current version (HGETALL of each immutable layer)."""
        for _ in range(5):
            version_b = self.client.get(self.base(arm) + "current")
            if not version_b:
                return None, [], np.zeros((0, 0), np.float32)
            version = version_b.decode()
            info = self.info(arm, version)
            got = self._read_layers(arm, info) if info is not None else None
            if got is not None:
                return version, *got
        raise RuntimeError(f"arm {arm!r}: current version kept vanishing")

    def _read_layers(self, arm: str, info: VersionInfo) -> tuple[list[str], np.ndarray] | None:
        """A version's rows from its layers, newest winning; None if its base was retired."""
        base = self.base(arm)
        pipe = self.client.pipeline(transaction=True)
        for layer in info.layers():
            pipe.hgetall(f"{base}vec:{layer}")
        layers = pipe.execute()
        if not layers[-1]:
            return None
        data: dict[bytes, bytes] = {}
        for layer_data in reversed(layers):  # oldest first, newest wins
            data.update(layer_data)
        ids = [k.decode() for k in data]
        mat = np.frombuffer(b"".join(data.values()), "<f4").reshape(len(ids), -1)
        return ids, mat.copy()


def _info_to_hash(info: VersionInfo) -> dict[str, Any]:
    data = asdict(info)
    data["extra"] = json.dumps(info.extra)
    return data


def _info_from_hash(data: dict[bytes, bytes]) -> VersionInfo:
    d = {k.decode(): v for k, v in data.items()}
    return VersionInfo(
        version=d["version"].decode(), dim=int(d["dim"]), item_count=int(d["item_count"]),
        created_at=d["created_at"].decode(), model_version=d["model_version"].decode(),
        dtype=d["dtype"].decode(), extra=json.loads(d["extra"]), user_prior=d["user_prior"],
        user_tower=d.get("user_tower", b""), base_layers=d.get("base_layers", b"").decode())
