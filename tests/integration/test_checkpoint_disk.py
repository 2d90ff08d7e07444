"""A checkpoint disk that refuses writes, under a real ``freshrec run``.

The fault is the kernel's: the worker's file-size limit (RLIMIT_FSIZE, set from outside
with prlimit) drops to one byte, so every checkpoint write fails with an OSError as on a
full or read-only disk, while the broker and Redis (other processes) stay up. The worker
must stay alive, say what is wrong in ``/readyz``, the ``freshrec_up`` gauge and its log,
leave the newest complete checkpoint loadable, and once the limit is lifted checkpoint,
commit and count every event exactly once.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import pytest

from consumers.kafka_source import KafkaEventProducer, ensure_topics
from model_store.checkpoints import CheckpointStore
from model_store.counters import RedisCounters
from model_store.redis_store import connect
from tests.helpers import encode, wait_for
from tests.integration.test_outages import metrics_text, status
from tests.integration.test_worker_e2e import committed_total, overrides
from worker.config import load_settings
from worker.tools.embedded import free_port
from worker.tools.synthetic import traffic

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="no prlimit")]


def http_status(url: str) -> int | None:
    """The endpoint's status, or None while the worker is not listening yet."""
    try:
        return int(status(url))
    except urllib.error.URLError:
        return None


def set_file_limit(pid: int, limit: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


@pytest.mark.timeout(300)
def test_a_checkpoint_disk_that_refuses_writes_keeps_the_worker_up_and_loses_nothing(
        stack, uid, tmp_path, tiny_bert_dir):
    cfg = overrides(stack, uid, tmp_path, tiny_bert_dir)
    port = free_port()
    cfg["metrics"] = {"port": port}
    settings = load_settings(None, cfg)
    base = f"http://127.0.0.1:{port}"
    k = settings.kafka
    ensure_topics(k.client_options(), {k.events_topic: 2, k.items_topic: 1, k.dlq_topic: 1})
    sets = [f"--set={sec}.{k}={json.dumps(v)}" for sec, d in cfg.items() for k, v in d.items()]
    proc = subprocess.Popen([sys.executable, "-m", "worker.tools.cli", "run", *sets],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log: list[str] = []  # a pipe, not a file: the file-size limit does not apply to it
    reader = threading.Thread(target=lambda: log.extend(proc.stderr or []), daemon=True)
    reader.start()
    producer = KafkaEventProducer(settings.kafka.client_options())
    events = list(traffic(400, seed=8, arms=("control", "fresh")))
    half = len(events) // 2
    ckpt = Path(settings.store.checkpoint_dir)

    def send(batch: list[dict[str, object]]) -> None:
        for e in batch:
            producer.emit(settings.kafka.events_topic, str(e["user_id"]).encode(), encode(e))
        producer.flush()

    def checkpoint_up() -> float | None:
        for line in metrics_text(base).splitlines():
            if line.startswith('freshrec_up{dependency="checkpoint"}'):
                return float(line.split()[-1])
        return None

    try:
        send(events[:half])
        wait_for(lambda: http_status(base + "/readyz") == 200 and len(CheckpointStore(
            ckpt).list()) >= 2, 120, what="a ready worker with checkpoints")
        set_file_limit(proc.pid, 1)  # the disk is full
        send(events[half:])
        wait_for(lambda: status(base + "/readyz") == 503, 60, what="readyz to report the disk")
        assert proc.poll() is None and status(base + "/healthz") == 200
        assert checkpoint_up() == 0.0
        wait_for(lambda: any("checkpoint unavailable" in line for line in log), 30,
                 what="a log line naming the checkpoint disk")
        last_good = CheckpointStore(ckpt).load_latest()
        assert last_good, "the newest complete checkpoint still loads"
        assert committed_total(stack.bootstrap, uid, settings.kafka.events_topic,
                               2) < len(events)  # what came during the fault: uncommitted
        set_file_limit(proc.pid, resource.RLIM_INFINITY)  # room again
        counters = RedisCounters(connect(settings.redis.url), uid)
        want: dict[tuple[str, str], int] = {}
        for e in events:
            key = (str(e["arm"]), str(e["type"]))
            want[key] = want.get(key, 0) + 1

        def exact() -> bool:
            got = counters.arm_totals()
            return all(got.get(a, {}).get(t, 0) == n for (a, t), n in want.items())

        wait_for(exact, 90, what="arm counters to match what was sent")
        wait_for(lambda: status(base + "/readyz") == 200, 60, what="ready again")
        wait_for(lambda: committed_total(stack.bootstrap, uid, settings.kafka.events_topic,
                                         2) == len(events), 60, what="every event committed")
        assert checkpoint_up() == 1.0
        assert not list(ckpt.glob(".tmp-*")), "no half-written checkpoint left behind"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert CheckpointStore(ckpt).load_latest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        producer.close()
    assert exact()  # nothing counted twice on the way out either
