"""Checkpoints: safetensors tensors + gzip JSON state + a JSON manifest with checksums.

Never pickle: a checkpoint is data only, so loading one cannot run code. A checkpoint is
written into a temporary directory and renamed into place, so a crash mid-write leaves the
previous checkpoint as the newest complete one.
"""

from __future__ import annotations

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

__all__ = ["Checkpoint", "CheckpointError", "CheckpointStore"]

log = logging.getLogger(__name__)

FORMAT = "freshrec-checkpoint"
FORMAT_VERSION = 1
_STATE = "state.json.gz"
_TENSORS = "tensors.safetensors"
_MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, foreign or of an unsupported version."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: JSON state, named arrays and manifest metadata."""

    seq: int
    path: Path
    state: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


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

    def list(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return sorted(p for p in self.root.glob("ckpt-*") if p.is_dir())

    def save(self, state: dict[str, Any], tensors: dict[str, np.ndarray] | None = None,
             meta: dict[str, Any] | None = None) -> Path:
        """Write a new checkpoint durably (fsync + atomic rename); blocks until done."""
        existing = self.list()
        seq = int(existing[-1].name.split("-")[1]) + 1 if existing else 1
        final = self.root / f"ckpt-{seq:09d}"
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files = {_STATE: gzip.compress(msgspec.json.encode(state), compresslevel=1)}
        if tensors:
            files[_TENSORS] = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "seq": seq,
            "created_at": datetime.now(UTC).isoformat(),
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            "meta": meta or {},
        }
        files[_MANIFEST] = msgspec.json.format(msgspec.json.encode(manifest), indent=2)
        for name, data in files.items():
            _write_synced(tmp / name, data)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        self._retain()
        return final

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
        return Checkpoint(int(manifest["seq"]), path, state, tensors, manifest.get("meta", {}))

    def load_latest(self) -> Checkpoint | None:
        """Newest checkpoint that verifies; corrupt ones are logged and skipped. None if none."""
        for path in reversed(self.list()):
            try:
                return self.load(path)
            except CheckpointError as exc:
                log.error("skipping checkpoint: %s", exc)
        return None

    def _retain(self) -> None:
        for old in self.list()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


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
