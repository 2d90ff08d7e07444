"""Training samples/s, and publish vectors/s beside a raw Redis MSET of the same bytes.

    python -m bench.train_publish [--items 10000] [--steps 30] [--batch 512]

Training: one lineage, real model sizes (384-d text vectors, 64-d item vectors, history of
10), batches drawn from replay buffers as in a cycle. Publish: ``RedisVectorStore.publish``
(chunked HSET into a fresh version hash + metadata + atomic Lua flip) against an MSET of
the same item vectors as plain keys, on the same embedded Redis, same run.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np
import redis
import torch

from bench.results import emit, parser, target
from consumers.columns import SampleRows
from consumers.events import Sample
from consumers.replay import ReplayBuffers
from model_store.base import VersionInfo
from model_store.redis_store import RedisVectorStore
from worker.config import ArmSettings, TrainingSettings
from worker.learning.batches import make_batch
from worker.learning.items import ItemTable
from worker.learning.model import FreshRecModel
from worker.learning.training import Trainer
from worker.tools.embedded import EmbeddedStack


def train_rate(items: int, steps: int, batch: int, device: torch.device) -> float:
    rng = random.Random(0)
    table = ItemTable(384, device)
    ids = [f"item-{i}" for i in range(items)]
    table.set_semantic(ids, np.random.default_rng(0).normal(size=(items, 384)).astype("f4"))
    buffers = ReplayBuffers(50_000, 50_000)
    for k in range(60_000):
        hist = tuple(rng.choice(ids) for _ in range(10))
        buffers.add(Sample(k, f"u{k % 5000}", rng.choice(ids), int(rng.random() < 0.2), "a",
                           f"r{k}", 0, 1.0, hist))
    cfg = TrainingSettings(batch_size=batch)
    trainer = Trainer([ArmSettings(name="a")], cfg, table, lambda t: np.zeros((0, 384)),
                      store=None, device=device)  # type: ignore[arg-type]
    lin = trainer.lineages["a"]
    lin.grow(len(table))
    def step() -> None:
        samples = buffers.sample(batch)
        cols = SampleRows.of(samples, table.index)
        rows = np.concatenate([cols.item, np.maximum(cols.hist.ravel(), 0)])
        trainer.step(lin, make_batch(samples, table, device), rows)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def publish_vs_mset(client: redis.Redis, items: int, rounds: int) -> tuple[float, float]:
    store = RedisVectorStore(client, "bench", retention=2)
    model = FreshRecModel(384, 64, capacity=items)
    semantic = torch.randn(items, 384)
    vecs = model.export(items, semantic)
    ids = [f"item-{i}" for i in range(items)]
    ours, raw = [], []
    for r in range(rounds):
        info = VersionInfo(version=f"v{r}", dim=vecs.shape[1], item_count=items,
                           created_at="now", user_prior=model.prior().tobytes())
        start = time.perf_counter()
        store.publish("a", f"v{r}", ids, vecs, info)
        ours.append(items / (time.perf_counter() - start))
        blob = np.ascontiguousarray(vecs, "<f4")
        mapping = {f"raw:{r % 2}:{i}": blob[k].tobytes() for k, i in enumerate(ids)}
        start = time.perf_counter()
        client.mset(mapping)
        raw.append(items / (time.perf_counter() - start))
    return statistics.median(ours), statistics.median(raw)


def main() -> None:
    ap = parser("bench.train_publish", __doc__)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.smoke:
        args.items, args.steps, args.rounds = 500, 3, 1
    device = torch.device(args.device)
    rate = train_rate(args.items, args.steps, args.batch, device)
    print(f"training: {rate:,.0f} samples/s on {device} "
          f"(batch {args.batch}, history 10, dim 64, {torch.get_num_threads()} threads)")
    with EmbeddedStack() as stack:
        client = redis.Redis.from_url(stack.redis_url)
        ours, raw = publish_vs_mset(client, args.items, args.rounds)
    print(f"publish: {ours:,.0f} vectors/s (versioned HSET + atomic flip) vs raw MSET "
          f"{raw:,.0f} vectors/s; ratio {ours / raw:.2f} (target >= 0.70); "
          f"{args.items} items x {64 + 1} float32")
    emit("bench.train_publish", args, {
        "device": str(device), "threads": torch.get_num_threads(),
        "train_samples_per_s": round(rate), "publish_vectors_per_s": round(ours),
        "raw_mset_vectors_per_s": round(raw), "publish_over_mset": round(ours / raw, 3)},
        {"publish_over_mset": target(round(ours / raw, 3), ">=", 0.7)})


if __name__ == "__main__":
    main()
