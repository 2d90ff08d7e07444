"""Item texts encoded per second: the old per-chunk loop against the length-sorted one.

    python -m bench.encode --device cuda --texts 20000 [--model DIR]

Same model, same texts, same run. ``per-chunk`` is the naive strategy (tokenize each
chunk of 64 texts in arrival order, padded to its longest); ``sorted`` tokenizes every text
in one call and encodes them shortest first, at batch 64 and at the CUDA default 512. The
vectors of both strategies are compared (bf16 autocast on CUDA, so not bit-identical).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from bench.results import emit, parser
from worker.learning.encoder import TextEncoder
from worker.tools.simulate import SimConfig, World


@torch.inference_mode()
def per_chunk(enc: TextEncoder, texts: list[str], batch: int) -> np.ndarray:
    """The naive loop (arrival order, padded per chunk): the baseline."""
    out = np.zeros((len(texts), enc.dim), np.float32)
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        toks = enc.tokenizer(chunk, padding=True, truncation=True, max_length=enc.max_length,
                             return_tensors="pt")
        toks = {k: v.to(enc.device) for k, v in toks.items()}
        with torch.autocast(enc.device.type, dtype=torch.bfloat16,
                            enabled=enc.device.type == "cuda"):
            hidden = enc.model(**toks).last_hidden_state
        mask = toks["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[start:start + len(chunk)] = torch.nn.functional.normalize(
            pooled.float(), dim=-1).cpu().numpy()
    return out


def timed(fn: Callable[[], np.ndarray], device: torch.device) -> tuple[float, np.ndarray]:
    """(seconds, result) of ``fn()``, synchronised on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    ap = parser("bench.encode", __doc__)
    ap.add_argument("--texts", type=int, default=5000)
    ap.add_argument("--model", default=None, help="model directory (default: bundled MiniLM)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.smoke:
        args.texts = 200
    device = torch.device(args.device)
    world = World(SimConfig(seed=3))
    texts = [world.new_item()[1] for _ in range(args.texts)]
    enc = TextEncoder(args.model, device, batch_size=64)
    enc.encode(texts[:256])  # warm-up
    base_s, base = timed(lambda: per_chunk(enc, texts, 64), device)
    figures = {"per-chunk 64": args.texts / base_s}
    for batch in (64, 512):
        enc.batch_size = batch
        secs, got = timed(lambda: enc.encode(texts), device)
        figures[f"sorted {batch}"] = args.texts / secs
        diff = float(np.max(np.abs(got - base)))
    print(f"encode {args.texts:,} texts on {device}: "
          + ", ".join(f"{k} {v:,.0f}/s" for k, v in figures.items())
          + f"; sorted 512 / per-chunk {figures['sorted 512'] / figures['per-chunk 64']:.1f}x;"
          f" max |diff| {diff:.3g}")
    emit("bench.encode", args, {
        "texts": args.texts, "device": str(device),
        "texts_per_s": {k: round(v, 1) for k, v in figures.items()},
        "sorted_512_over_per_chunk": round(figures["sorted 512"] / figures["per-chunk 64"], 2),
        "max_abs_diff": diff})


if __name__ == "__main__":
    main()
