"""Checkpoints: safetensors tensors + gzip JSON state + a JSON manifest with checksums.

Never pickle: a checkpoint is data only, so loading one cannot run code. A checkpoint is
written into a temporary directory and renamed into place, so a crash mid-write leaves the
previous checkpoint as the newest complete one.

A checkpoint is full, or a delta over its ``parent`` (what changed since that one: new and
touched rows, appended ids, changed entries). Restoring reads the chain from its full base
forward; :meth:`CheckpointStore.load_chain` hands it over in that order, and the caller
applies each part. Retention never deletes a checkpoint a retained one builds on.
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

__all__ = ["Checkpoint", "CheckpointError", "CheckpointStore", "CheckpointUnavailable"]

log = logging.getLogger(__name__)

FORMAT = "freshrec-checkpoint"
FORMAT_VERSION = 1
_STATE = "state.json.gz"
_TENSORS = "tensors.safetensors"
_MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, foreign or of an unsupported version."""


class CheckpointUnavailable(OSError):
    """A checkpoint could not be written (disk full, read-only, gone): nothing was written.

    Transient by nature: the half-written folder is removed, the newest complete checkpoint
    and its chain are untouched, and a later save (once there is room) starts where this
    one would have.
    """


@dataclass
class Checkpoint:
    """A loaded checkpoint: JSON state, named arrays and manifest metadata."""

    seq: int
    path: Path
    state: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None  # the checkpoint this delta builds on; None: a full one
    nbytes: int = 0  # bytes written for it


class CheckpointStore:
    """A directory of numbered checkpoints with retention.

    Args:
        root: directory holding ``ckpt-<seq>`` folders (created if missing).
        keep: how many newest checkpoints to retain.
    """

    def __init__(self, root: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.root = Path(root)
        self.keep = keep
        self.root.mkdir(parents=True, exist_ok=True)
        self.last_bytes = 0  # bytes the last save wrote

    def list(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return sorted(p for p in self.root.glob("ckpt-*") if p.is_dir())

    def save(self, state: dict[str, Any], tensors: dict[str, np.ndarray] | None = None,
             meta: dict[str, Any] | None = None, parent: Path | None = None) -> Path:
        """Write a new checkpoint durably (fsync + atomic rename); blocks until done.

        ``parent``: this one is a delta over that checkpoint (which must exist).
        """
        if parent is not None and not (parent / _MANIFEST).is_file():
            raise CheckpointError(f"{parent}: delta parent does not exist")
        existing = self.list()
        seq = int(existing[-1].name.split("-")[1]) + 1 if existing else 1
        final = self.root / f"ckpt-{seq:09d}"
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._write(tmp, final, state, tensors, meta, parent, seq)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointUnavailable(exc.errno, f"checkpoint not written to {self.root}: "
                                        f"{exc.strerror or exc}") from exc
        self._retain()
        return final

    def _write(self, tmp: Path, final: Path, state: dict[str, Any],
               tensors: dict[str, np.ndarray] | None, meta: dict[str, Any] | None,
               parent: Path | None, seq: int) -> None:
        tmp.mkdir()
        files = {_STATE: gzip.compress(msgspec.json.encode(state), compresslevel=1)}
        if tensors:
            files[_TENSORS] = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "seq": seq,
            "created_at": datetime.now(UTC).isoformat(),
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            "meta": meta or {},
            "parent": parent.name if parent is not None else None,
            "bytes": sum(len(data) for data in files.values()),
        }
        files[_MANIFEST] = msgspec.json.format(msgspec.json.encode(manifest), indent=2)
        for name, data in files.items():
            _write_synced(tmp / name, data)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        self.last_bytes = sum(len(data) for data in files.values())

    def load(self, path: str | os.PathLike[str]) -> Checkpoint:
        """Load and verify one checkpoint folder; raise :class:`CheckpointError` if unusable."""
        path = Path(path)
        manifest_path = path / _MANIFEST
        try:
            manifest = msgspec.json.decode(manifest_path.read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable manifest ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a freshrec checkpoint (foreign manifest)")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: unsupported format_version "
                                  f"{manifest.get('format_version')!r}")
        blobs: dict[str, bytes] = {}
        for name, digest in manifest.get("files", {}).items():
            if name not in (_STATE, _TENSORS):
                raise CheckpointError(f"{path}: unexpected file {name!r} in manifest")
            try:
                data = (path / name).read_bytes()
            except OSError as exc:
                raise CheckpointError(f"{path}: missing {name}") from exc
            if hashlib.sha256(data).hexdigest() != digest:
                raise CheckpointError(f"{path}: checksum mismatch in {name} (corrupt)")
            blobs[name] = data
        if _STATE not in blobs:
            raise CheckpointError(f"{path}: manifest lists no state file")
        try:
            state = msgspec.json.decode(gzip.decompress(blobs[_STATE]))
            tensors = st_load(blobs[_TENSORS]) if _TENSORS in blobs else {}
        except Exception as exc:  # noqa: BLE001 - any decode failure means unusable
            raise CheckpointError(f"{path}: cannot decode ({exc})") from exc
        meta = manifest.get("meta", {})
        return Checkpoint(int(manifest["seq"]), path, state, tensors, meta,
                          manifest.get("parent"), int(manifest.get("bytes", 0)))

    def load_chain(self, path: str | os.PathLike[str]) -> builtins.list[Checkpoint]:
        """``path`` and the checkpoints it builds on, full base first; every one verified."""
        chain = [self.load(path)]
        while chain[-1].parent is not None:
            if len(chain) > 10_000:
                raise CheckpointError(f"{path}: parent chain does not end")
            chain.append(self.load(self.root / chain[-1].parent))
        return chain[::-1]

    def load_latest(self) -> builtins.list[Checkpoint]:
        """The newest checkpoint whose whole chain verifies, base first ([] if none).

        A corrupt or missing link is logged and the next older checkpoint tried.
        """
        for path in reversed(self.list()):
            try:
                return self.load_chain(path)
            except CheckpointError as exc:
                log.error("skipping checkpoint: %s", exc)
        return []

    def _retain(self) -> None:
        """Keep the newest ``keep`` checkpoints and every one they build on."""
        folders = self.list()
        needed: set[str] = set()
        for path in folders[-self.keep:]:
            name: str | None = path.name
            while name is not None and name not in needed:
                needed.add(name)
                name = _parent_of(self.root / name)
        for old in folders:
            if old.name not in needed:
                shutil.rmtree(old, ignore_errors=True)


def _parent_of(path: Path) -> str | None:
    try:
        parent = msgspec.json.decode((path / _MANIFEST).read_bytes()).get("parent")
    except (OSError, msgspec.DecodeError, AttributeError):
        return None
    return parent if isinstance(parent, str) else None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
