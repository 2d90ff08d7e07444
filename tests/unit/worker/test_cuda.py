"""Columns to batches on every device; on a GPU, the same cycles train and publish on CUDA."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.memory_store import MemoryVectorStore
from tests.fakes import ListSource
from worker.config import ArmSettings, TrainingSettings
from worker.learning.batches import batch_from_rows
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.tools.synthetic import encode, traffic

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def run(device: torch.device) -> tuple[Trainer, MemoryVectorStore]:
    msgs = [RawMessage("freshrec.events", 0, k, None, encode(e))
            for k, e in enumerate(traffic(3000, seed=4, users=100, items=300))]
    source = ListSource(msgs)
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    store = MemoryVectorStore()
    cfg = TrainingSettings(cycle_interval_s=0, steps_per_cycle=5, batch_size=256,
                           warmup_cycles=0)
    trainer = Trainer([ArmSettings(name="fresh", share=1.0)], cfg,
                      ItemTable(16, device, pipeline.item_index),
                      lambda texts: np.zeros((len(texts), 16), np.float32), store,
                      dim=8, device=device, seed=0)
    now = itertools.count()
    while source.pos < len(msgs):
        pipeline.step(1000)
        if trainer.due(float(next(now)), pipeline):
            trainer.run_cycle(pipeline, float(next(now)))
    return trainer, store


@needs_cuda
def test_a_cycle_on_cuda_publishes_what_cpu_learns() -> None:
    gpu_trainer, gpu = run(torch.device("cuda"))
    _, cpu = run(torch.device("cpu"))
    assert next(gpu_trainer.lineages["fresh"].model.parameters()).is_cuda
    ids = [f"i{k}" for k in range(300)]
    v_gpu, got_gpu, found_gpu = gpu.lookup("fresh", ids)
    v_cpu, got_cpu, found_cpu = cpu.lookup("fresh", ids)
    assert v_gpu == v_cpu and found_gpu.all() == found_cpu.all()
    assert np.abs(got_gpu[found_gpu]).max() > 0
    # bf16 autocast on CUDA: close to the CPU result, not bit-identical
    assert np.corrcoef(got_gpu[found_gpu].ravel(), got_cpu[found_cpu].ravel())[0, 1] > 0.9


@pytest.mark.parametrize("device", DEVICES)
def test_columns_become_a_batch_in_one_copy(device: str) -> None:
    items = np.arange(4, dtype=np.int32)
    hist = np.array([[1, -1], [2, 3], [-1, -1], [0, 0]], np.int32)
    batch = batch_from_rows(items, hist, np.array([1, 0, 1, 0], np.int8), torch.device(device))
    assert batch.items.device.type == device and batch.items.dtype == torch.int64
    assert batch.mask.cpu().tolist() == [[1, 0], [1, 1], [0, 0], [1, 1]]
    assert batch.history.cpu().tolist() == [[1, 0], [2, 3], [0, 0], [0, 0]]
    assert batch.labels.cpu().tolist() == [1.0, 0.0, 1.0, 0.0]
