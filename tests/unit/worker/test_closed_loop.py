"""The closed loop in process: simulator ▸ pipeline ▸ trainer ▸ store ▸ ranker, with a shift."""

from __future__ import annotations

import itertools

import pytest

from consumers.dlq import MemoryDeadLetters
from consumers.events import RawMessage
from consumers.joiner import Joiner
from consumers.pipeline import IngestPipeline
from model_store.counters import MemoryCounters
from model_store.memory_store import MemoryVectorStore
from tests.fakes import ListSource
from worker.config import DriftSettings, ExperimentSettings, TrainingSettings
from worker.experiments.drift_monitor import DriftMonitor
from worker.experiments.monitor import ExperimentMonitor
from worker.learning.encoder import SemanticCache
from worker.learning.items import ItemTable
from worker.learning.training import Trainer
from worker.serving.service import RankService
from worker.tools.simulate import SimConfig, Simulator


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~80 s idle; 300 s measured with a soak running beside it
def test_incremental_beats_frozen_after_a_shift_and_drift_fires_only_after(real_encoder):
    exp = ExperimentSettings()
    store, counters = MemoryVectorStore(), MemoryCounters()
    source = ListSource([])
    pipeline = IngestPipeline(source, MemoryDeadLetters(), joiner=Joiner(window_ms=5000))
    drift = DriftMonitor(DriftSettings(start_after_cycles=5, psi_window=3000,
                                       label_window=3000), exp.control)
    # A smaller gate set than the default 4096: the same loop at less cost, so CI on a
    # busy 2-core machine keeps well inside its budget.
    cfg = TrainingSettings(cycle_interval_s=0, warmup_cycles=4, gate_samples=1024)
    trainer = Trainer(exp.arms, cfg,
                      ItemTable(real_encoder.dim), SemanticCache(real_encoder).get, store,
                      seed=1, drift=drift)
    monitor = ExperimentMonitor(exp, counters=counters)
    clock = itertools.count(1_700_000_000_000, 20)

    def emit(topic, key, value):
        source.messages.append(RawMessage(topic, 0, len(source.messages), key, value))

    shift_at, total = 12_000, 20_000
    sim = Simulator(SimConfig(seed=5, n_users=1000, shift_at_request=shift_at,
                              prewarm_requests=3000), list(exp.arms),
                    RankService(store, exp.arms, exp.salt, counters), emit,
                    clock_ms=lambda: next(clock))
    sim.publish_catalog()
    sim.prewarm()
    alerts_before, alerts_after = set(), set()
    for n in range(total):
        sim.step()
        if (n + 1) % 500 == 0:
            while source.pos < len(source.messages):
                monitor.record(pipeline.step(5000))
            trainer.run_cycle(pipeline, float(n))
            monitor.flush()
            up = {k for k, v in drift.alerts().items() if v}
            (alerts_before if n < shift_at else alerts_after).update(up)
    monitor.update()
    stats = monitor.snapshot()["arms"]["fresh"]
    assert stats["ctr"] > monitor.snapshot()["arms"]["control"]["ctr"]
    assert stats["p_value"] < 0.01 and stats["sequential_p"] < 0.01
    assert alerts_before == set(), f"drift alerted before the shift: {alerts_before}"
    assert alerts_after, "no drift alert after the shift"
    assert sim.new_item_clicks > 0
