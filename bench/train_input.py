"""Training samples/s end to end (batch building included), by input path, on CPU or GPU.

    python -m bench.train_input --device cuda --items 1000000 --batch 512 16384

Three figures per batch size, measured in one run on the same model and buffers:

* ``objects``: the old input path, ``Sample`` objects drawn from the replay buffers and
  turned into tensors by looping over their string ids (:func:`make_batch`);
* ``columns``: the path the trainer takes now, a vectorised gather from the buffers'
  integer columns and one pinned copy to the device (:func:`batch_from_rows`);
* ``step only``: the same training step on one batch already on the device (the ceiling).

Real model sizes: 384-d text vectors, 64-d item vectors, histories of 10.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.results import emit, parser
from consumers.events import Sample
from consumers.replay import ReplayBuffers
from worker.config import ArmSettings, TrainingSettings
from worker.learning.batches import Batch, batch_from_rows, make_batch
from worker.learning.items import ItemTable
from worker.learning.training import Trainer


def setup(items: int, samples: int, device: torch.device) -> tuple[ItemTable, ReplayBuffers]:
    """An item table with text vectors for ``items`` ids and buffers of ``samples``."""
    rng = random.Random(0)
    buffers = ReplayBuffers(samples // 2, samples // 2, history_len=10)
    table = ItemTable(384, device, buffers.index)
    ids = [f"item-{i}" for i in range(items)]
    vectors = np.random.default_rng(0).normal(size=(items, 384)).astype("f4")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table.set_semantic(ids, vectors)
    for k in range(samples):
        hist = tuple(rng.choice(ids) for _ in range(10))
        buffers.add(Sample(k, f"u{k % 5000}", rng.choice(ids), int(rng.random() < 0.2), "a",
                           f"r{k}", 0, 1.0, hist))
    return table, buffers


def rate(steps: int, batch: int, device: torch.device, fn: Callable[[], object]) -> float:
    """Samples/s over ``steps`` calls of ``fn`` (after two warm-up calls)."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = parser("bench.train_input", __doc__)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=200_000, help="held in the buffers")
    ap.add_argument("--batch", type=int, nargs="+", default=[512, 16_384])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.smoke:
        args.items, args.samples, args.batch, args.steps = 2000, 4000, [256], 3
    device = torch.device(args.device)
    start = time.perf_counter()
    table, buffers = setup(args.items, args.samples, device)
    print(f"setup: {args.items:,} items, {args.samples:,} buffered samples in "
          f"{time.perf_counter() - start:.1f} s; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f" ({torch.get_num_threads()} threads)"))
    per_batch: dict[str, dict[str, float]] = {}
    for batch in args.batch:
        steps = max(3, args.steps if batch <= 4096 else args.steps // 2)
        figures = measure(table, buffers, batch, steps, device)
        per_batch[str(batch)] = {k.replace(" ", "_") + "_per_s": round(v)
                                 for k, v in figures.items()}
        line = ", ".join(f"{k} {v:,.0f}/s" for k, v in figures.items())
        print(f"batch {batch:>6}: {line}; end to end columns/objects "
              f"{figures['train columns'] / figures['train objects']:.1f}x, "
              f"columns/step-only {figures['train columns'] / figures['step only']:.2f}",
              flush=True)
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    emit("bench.train_input", args, {"device": str(device), "gpu": gpu_name,
                                     "samples_per_s_by_batch": per_batch})


def measure(table: ItemTable, buffers: ReplayBuffers, batch: int, steps: int,
            device: torch.device) -> dict[str, float]:
    """The five figures for one batch size."""
    trainer = Trainer([ArmSettings(name="a")], TrainingSettings(batch_size=batch), table,
                      lambda t: np.zeros((0, 384)), store=None,  # type: ignore[arg-type]
                      device=device)
    lin = trainer.lineages["a"]
    lin.grow(len(table))
    step = trainer.step  # the cycle's own training step

    def objects() -> tuple[Batch, np.ndarray]:
        samples = buffers.sample(batch)
        rows = np.asarray(table.lookup([s.item_id for s in samples]
                                        + [h for s in samples for h in s.history]))
        return make_batch(samples, table, device), rows

    def columns() -> tuple[Batch, np.ndarray]:
        items, hist, labels = buffers.sample_rows(batch)
        # The rows a batch looks up, as the trainer's cycle hands them to the step.
        return (batch_from_rows(items, hist, labels, device),
                np.concatenate([items, np.maximum(hist.ravel(), 0)]))

    fixed = columns()
    return {
        "input objects": rate(steps, batch, device, objects),
        "input columns": rate(steps, batch, device, columns),
        "train objects": rate(steps, batch, device, lambda: step(lin, *objects())),
        "train columns": rate(steps, batch, device, lambda: step(lin, *columns())),
        "step only": rate(steps, batch, device, lambda: step(lin, *fixed)),
    }


if __name__ == "__main__":
    main()
