"""Two ``freshrec run --role train`` ranks on the real broker and Redis (gloo, CPU).

Labelled samples go straight to a 2-partition samples topic (as the ingest tier writes
them); two trainer processes started with torchrun's environment each read one
partition and the whole catalog, run lockstep cycles, and rank 0 publishes. The vectors
rank 0 published must equal, item by item, what rank 1 holds in its own checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from consumers.kafka_samples import KafkaSampleSink
from model_store.redis_store import RedisVectorStore
from tests.helpers import expected_samples, wait_for
from tests.integration.test_roles import role_settings, setup_topics
from tests.integration.test_worker_e2e import simulate
from worker.config import load_settings
from worker.learning.encoder import TextEncoder
from worker.runtime.app import build_app

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(420)
def test_two_trainer_ranks_publish_what_each_rank_holds(stack, uid, tmp_path, tiny_bert_dir):
    ov = role_settings(stack, uid, tmp_path, tiny_bert_dir, "train")
    ov["training"].update(overlap=False, warmup_cycles=2)
    settings = load_settings(None, ov)
    setup_topics(settings, uid)
    events = simulate(settings.kafka.client_options(), (f"{uid}.events", f"{uid}.items"), 800)
    sink = KafkaSampleSink(f"{uid}.samples", settings.kafka.client_options())
    sink.send(expected_samples(events, window_ms=5000))
    sink.close()
    sets = [f"--set={sec}.{k}={json.dumps(v)}" for sec, d in ov.items() for k, v in d.items()]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONUNBUFFERED": "1"}
    logs = [open(tmp_path / f"rank{r}.log", "w") for r in range(2)]  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, "-m", "worker.tools.cli", "run", "--role",
                               "train", *sets], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=logs[r], stderr=subprocess.STDOUT) for r in range(2)]
    store = RedisVectorStore(_client(stack), uid)
    try:
        wait_for(lambda: store.current("fresh") is not None, timeout_s=240,
                 what="rank 0 to publish")
        # Settled: no new version for 10 s (every sample read, no cycle due any more).
        last, since = store.current("fresh").version, time.monotonic()
        while time.monotonic() - since < 10:
            assert all(p.poll() is None for p in procs), _tail(tmp_path)
            now = store.current("fresh").version
            if now != last:
                last, since = now, time.monotonic()
            time.sleep(0.5)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for f in logs:
            f.close()
    # Rank 1's state, restored from its own checkpoint chain by a one-process trainer.
    ov1 = {**ov, "store": {"checkpoint_dir": str(tmp_path / "train" / "ckpt" / "rank-1")}}
    follower = build_app(load_settings(None, ov1), encoder=TextEncoder(tiny_bert_dir),
                         role="train")
    try:
        assert follower.worker.restore(), _tail(tmp_path)
        # Rank 1 read partition 1 of the samples, and the whole catalog.
        read = {tp for tp, off in follower.pipeline.offsets.items() if off > 0}
        assert read == {(f"{uid}.samples", 1), (f"{uid}.items", 0)}, read
        trainer = follower.trainer
        served = trainer.lineages["fresh"].served
        version, ids, published = store.all_vectors("fresh")
        assert version == last and len(ids) > 50
        rows = np.array(trainer.table.lookup(ids))
        held = served.export_rows(rows, trainer.table.semantic)
        np.testing.assert_allclose(published, held, rtol=0, atol=1e-4)
    finally:
        follower.close()


def _client(stack):
    import redis

    return redis.Redis.from_url(stack.redis_url)


def _tail(tmp_path) -> str:
    return "\n".join((tmp_path / f"rank{r}.log").read_text()[-1500:] for r in range(2))
