"""Scale: publish and checkpoint cost at a small and a large catalog, side by side.

    python -m bench.scale [--sizes 10000,1000000] [--changed 0.01]

For each catalog size, one run on the embedded Redis and a temporary checkpoint folder:

* **publish**: a full version of every item (``RedisVectorStore.publish``), then a delta
  version of ``--changed`` of the rows over it (what a cycle between dense updates
  publishes), then a second full one. Seconds for each, and the Redis memory each version
  added (``used_memory`` before and after): a retained delta costs its changed rows.
* **checkpoint**: a trainer with one lineage over the catalog (384-d text vectors, 64-d
  item vectors) and its catalog texts. A full checkpoint, then a "cycle" (5,120 rows
  trained, 500 new items, 100 re-encoded texts), then a delta checkpoint of it, then the
  same cycle and a full one for comparison. Bytes and seconds of each (durable: fsync and
  rename included): the delta should stay flat across catalog sizes, the full one grows.
  And the restart: reading, verifying and applying the full + delta chain.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch

from bench.results import emit, parser
from consumers.catalog import Catalog
from consumers.events import ItemUpdate
from model_store.base import VersionInfo
from model_store.checkpoints import CheckpointStore
from model_store.redis_store import RedisVectorStore
from worker.config import ArmSettings, TrainingSettings
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.tools.embedded import EmbeddedStack

DIM = 65  # 64-d item vector + bias


def used_memory(client: redis.Redis) -> int:
    """Redis ``used_memory`` after its lazy frees have run."""
    time.sleep(0.2)
    return int(client.info("memory")["used_memory"])


def publish_figures(client: redis.Redis, items: int, changed: float) -> dict[str, float]:
    """Full, delta and full publish of ``items`` rows: seconds and Redis bytes each."""
    store = RedisVectorStore(client, prefix=f"scale{items}", retention=3)
    rng = np.random.default_rng(0)
    ids = [f"item-{k}" for k in range(items)]
    vecs = rng.normal(size=(items, DIM)).astype(np.float32)
    out: dict[str, float] = {}

    def info(version: str) -> VersionInfo:
        return VersionInfo(version=version, dim=DIM, item_count=items, created_at="now")

    for name, parent, rows in (("full", None, None), ("delta", "v1", "changed"),
                               ("full2", None, None)):
        version = {"full": "v1", "delta": "v2", "full2": "v3"}[name]
        if rows is None:
            pub_ids, pub_vecs = ids, vecs
        else:
            pick = np.sort(rng.choice(items, size=max(1, int(items * changed)), replace=False))
            pub_ids, pub_vecs = [ids[k] for k in pick], vecs[pick] + 1.0
        before = used_memory(client)
        start = time.perf_counter()
        store.publish("a", version, pub_ids, pub_vecs, info(version), parent=parent)
        out[f"{name}_s"] = time.perf_counter() - start
        out[f"{name}_bytes"] = used_memory(client) - before
    # The delta reads whole: its rows where it changed them, the parent's elsewhere.
    _, _, found = store.lookup("a", ids[:1000])
    assert found.all(), "a lookup of the delta version missed rows"
    return out


def checkpoint_figures(items: int, root: Path) -> dict[str, float]:
    """Full checkpoint, a cycle's delta, and a full one after it: bytes and seconds."""
    rng = np.random.default_rng(1)
    table = ItemTable(384)
    ids = [f"item-{k}" for k in range(items)]
    for lo in range(0, items, 100_000):
        chunk = ids[lo:lo + 100_000]
        table.set_semantic(chunk, rng.normal(size=(len(chunk), 384)).astype(np.float32))
    catalog = Catalog()
    for k, item in enumerate(ids):
        catalog.upsert(ItemUpdate(item, 1, f"catalog text of item {k}, a few words long"))
    catalog.take_changed()
    trainer = Trainer([ArmSettings(name="a")], TrainingSettings(), table,
                      lambda t: np.zeros((0, 384)), store=None)  # type: ignore[arg-type]
    lin = trainer.lineages["a"]
    lin.grow(len(table))
    store = CheckpointStore(root, keep=2)

    def save(since: dict[str, Any] | None, parent: Path | None) -> tuple[Path, float, int]:
        start = time.perf_counter()
        state, tensors = trainer.state(since and since["trainer"])
        state = {"trainer": state,
                 "catalog": catalog.state_dict(since["catalog"] if since else None)}
        path = store.save(state, tensors, parent=parent)
        return path, time.perf_counter() - start, store.last_bytes

    def cycle(step: int) -> None:
        rows = rng.choice(len(table), size=5120, replace=False)
        with torch.no_grad():
            lin.model.collab.weight[torch.as_tensor(rows)] += 0.01
        lin.touched[rows] = True
        lin._stamp(rows)
        new = [f"new-{step}-{k}" for k in range(500)]
        table.set_semantic(new, rng.normal(size=(500, 384)).astype(np.float32))
        lin.grow(len(table))
        for item in new + [ids[k] for k in rng.choice(items, size=100, replace=False)]:
            catalog.upsert(ItemUpdate(item, 2 + step, f"text {step} of {item}"))

    marks = {"trainer": trainer.marks(), "catalog": catalog.stamp}
    path, full_s, full_b = save(None, None)
    cycle(1)
    delta_path, delta_s, delta_b = save(marks, path)
    start = time.perf_counter()  # restart: read and verify the chain, apply it in order
    restored = Trainer([ArmSettings(name="a")], TrainingSettings(), ItemTable(384),
                       lambda t: np.zeros((0, 384)), store=None)  # type: ignore[arg-type]
    restored_catalog = Catalog()
    for ckpt in store.load_chain(delta_path):
        restored.load(ckpt.state["trainer"], ckpt.tensors)
        restored_catalog.load_state_dict(ckpt.state["catalog"])
    restore_s = time.perf_counter() - start
    assert restored.table.ids == table.ids and restored_catalog.texts == catalog.texts
    cycle(2)
    _, full2_s, full2_b = save(None, None)
    return {"full_s": full_s, "full_bytes": full_b, "delta_s": delta_s,
            "delta_bytes": delta_b, "full2_s": full2_s, "full2_bytes": full2_b,
            "restore_s": restore_s}


def main() -> None:
    ap = parser("bench.scale", __doc__)
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    if args.smoke:
        args.sizes = "6000"
    sizes = [int(s) for s in args.sizes.split(",")]
    mb = 1 / 1e6
    figures: dict[str, dict[str, dict[str, float]]] = {"publish": {}, "checkpoint": {}}
    with EmbeddedStack() as stack:
        client = redis.Redis.from_url(stack.redis_url)
        for items in sizes:
            pub = publish_figures(client, items, args.changed)
            client.flushall()
            figures["publish"][str(items)] = {k: round(v, 4) for k, v in pub.items()}
            print(f"publish @ {items:,} items: full {pub['full_s']:.2f} s "
                  f"({pub['full_bytes'] * mb:.1f} MB in Redis) | delta of "
                  f"{args.changed:.0%} {pub['delta_s']:.3f} s "
                  f"({pub['delta_bytes'] * mb:.2f} MB) | full again {pub['full2_s']:.2f} s "
                  f"({pub['full2_bytes'] * mb:.1f} MB) | delta/full time "
                  f"{pub['delta_s'] / pub['full2_s']:.3f}, bytes "
                  f"{pub['delta_bytes'] / max(pub['full2_bytes'], 1):.3f}", flush=True)
    for items in sizes:
        with tempfile.TemporaryDirectory(prefix="freshrec-scale-") as tmp:
            ck = checkpoint_figures(items, Path(tmp))
        figures["checkpoint"][str(items)] = {k: round(v, 4) for k, v in ck.items()}
        print(f"checkpoint @ {items:,} items (trainer + catalog): full "
              f"{ck['full_s']:.2f} s / {ck['full_bytes'] * mb:.1f} MB | delta after a cycle "
              f"{ck['delta_s']:.3f} s / {ck['delta_bytes'] * mb:.2f} MB | full after a cycle "
              f"{ck['full2_s']:.2f} s / {ck['full2_bytes'] * mb:.1f} MB | restore of full + "
              f"delta {ck['restore_s']:.2f} s", flush=True)
    emit("bench.scale", args, figures)


if __name__ == "__main__":
    main()
