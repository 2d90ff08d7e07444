"""Fault-injection soak: a real ``freshrec run`` under kill -9s, hostile messages, outages.

An external producer sends seeded good traffic (two arms) with hostile messages between
the events: a 10 MiB value, invalid UTF-8 inside a string, 10k-deep nesting, timestamps
ten years ahead, 2**63 and in seconds, non-JSON and missing fields. Meanwhile the worker is
SIGKILLed at random moments and restarted, and Redis is stopped for a while and started
again (the same server, with its data). At the end the soak compares the per-arm counters
in Redis and the dead-letter topic with the ground truth it computed itself, prints one
summary line, and exits non-zero on any loss, duplicate, unexpected exit or crash loop.

    python -m bench.soak                       # the issue's acceptance scale
    python -m bench.soak --events 4000 --hostile 800 --kills 2 --redis-outage-s 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.dlq import source_of
from consumers.kafka_source import ensure_topics
from model_store.counters import RedisCounters
from model_store.redis_store import connect
from worker.tools.embedded import EmbeddedStack, ManagedProcess, free_port, redis_binary
from worker.tools.synthetic import encode, traffic

TOPIC, ITEMS, DLQ = "soak.events", "soak.items", "soak.dlq"


def hostile(k: int, now_ms: int, rng: random.Random) -> tuple[bytes, str]:
    """The k-th hostile message and the reason it must be dead-lettered with."""
    base = {"event_id": f"bad-{k}", "ts": now_ms, "type": "click", "user_id": "u1",
            "item_id": "i1", "request_id": f"bad-r{k}", "arm": "fresh"}
    kind = k % 8
    if kind == 0:
        return encode(base).replace(b'"bad-', b'"\xff\xfe-', 1), "not_utf8"
    if kind == 1:
        return b"[" * 10_000 + b"]" * 10_000, "not_json"
    if kind == 2:
        return encode({**base, "ts": now_ms + 10 * 365 * 86_400_000}), "bad_ts"
    if kind == 3:
        return encode({**base, "ts": 2**63}), "bad_ts"
    if kind == 4:
        return encode({**base, "ts": now_ms // 1000}), "bad_ts"
    if kind == 5:
        return b"{not json" + bytes([rng.randrange(32, 127)]), "not_json"
    if kind == 6:
        return encode({k2: v for k2, v in base.items() if k2 != "user_id"}), "missing_field"
    return encode({**base, "pad": "x" * 70_000}), "too_large"


class Worker:
    """The worker process: started, SIGKILLed, restarted; unexpected exits are counted."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.unexpected_exits = 0
        self.kills = 0

    def start(self) -> None:
        """Spawn the worker (its own session: our Ctrl-C does not reach it)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - argv built above
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def check(self) -> None:
        """Count and restart an exit we did not cause."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits += 1
            self.start()

    def kill9(self) -> None:
        """SIGKILL the worker, then start it again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.kills += 1
        self.start()

    def stop(self) -> int:
        """SIGINT (a clean stop); the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def produce(bootstrap: str, events: list[dict[str, Any]], bad: list[tuple[bytes, str]],
            rate: float, seed: int) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5,
                             max_request_size=16 << 20)
    rng = random.Random(seed)
    messages = [(e["user_id"].encode(), encode(e)) for e in events]
    for value, _ in bad:  # hostile messages at random places between the good ones
        messages.insert(rng.randrange(len(messages) + 1), (b"u-bad", value))
    start = time.monotonic()
    for n, (key, value) in enumerate(messages):
        producer.send(TOPIC, key=key, value=value)
        ahead = (n + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    producer.flush()
    producer.close()


def read_dlq(bootstrap: str) -> list[tuple[str | None, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    tp = TopicPartition(DLQ, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    end = consumer.end_offsets([tp])[tp]
    out = []
    while consumer.position(tp) < end:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                h = dict(r.headers or [])
                out.append((h.get("freshrec.reason", b"").decode() or None,
                            source_of(list(r.headers or []))))
    consumer.close()
    return out


def main() -> int:  # noqa: PLR0915 - one scenario, read top to bottom
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="good events (about)")
    ap.add_argument("--hostile", type=int, default=20_000)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--redis-outage-s", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=1500.0, help="messages per second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--drain-timeout-s", type=float, default=600.0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="freshrec-soak-"))
    now_ms = time.time_ns() // 1_000_000
    requests = max(1, int(args.events / 2.6))  # traffic() makes ~2.6 events per request
    events = list(traffic(requests, seed=args.seed, t0=now_ms - 600_000, users=500,
                          items=2000, arms=("control", "fresh")))
    bad = [hostile(k, now_ms, rng) for k in range(args.hostile)]
    bad[0] = (b"x" * (10 << 20), "too_large")  # and one 10 MiB message
    truth = Counter((e["arm"], e["type"]) for e in events)
    with EmbeddedStack(work / "stack") as stack:
        rport = free_port()
        redis = ManagedProcess("redis", [redis_binary(), "--port", str(rport), "--bind",
                                         "127.0.0.1", "--save", "", "--appendonly", "yes",
                                         "--dir", str(work)], rport, work / "redis.log")
        redis.start()
        url = f"redis://127.0.0.1:{rport}/0"
        ensure_topics({"bootstrap_servers": [stack.bootstrap]},
                      {TOPIC: 4, ITEMS: 1, DLQ: 1})
        argv = [sys.executable, "-m", "worker.tools.cli", "run",
                "--bootstrap-servers", stack.bootstrap, "--redis-url", url,
                "--group-id", "soak", "--metrics-port", str(free_port()),
                "--set", f"kafka.events_topic={TOPIC}", "--set", f"kafka.items_topic={ITEMS}",
                "--set", f"kafka.dlq_topic={DLQ}", "--set", "ingest.join_window_s=5",
                "--set", f"store.checkpoint_dir={work / 'ckpt'}",
                "--set", "ingest.checkpoint_interval_s=1"]
        worker = Worker(argv, work / "worker.log")
        worker.start()
        start = time.monotonic()
        total = (len(events) + len(bad)) / args.rate
        sender = threading.Thread(target=produce, args=(stack.bootstrap, events, bad,
                                                        args.rate, args.seed))
        sender.start()
        kill_at = sorted(rng.uniform(0.1, 0.9) * total for _ in range(args.kills))
        outage_at = 0.5 * total
        outage_done = False
        while sender.is_alive() or kill_at:
            t = time.monotonic() - start
            if kill_at and t >= kill_at[0]:
                kill_at.pop(0)
                worker.kill9()
            if not outage_done and t >= outage_at and args.redis_outage_s > 0:
                redis.stop()
                time.sleep(args.redis_outage_s)
                worker.check()
                redis.start()
                outage_done = True
            worker.check()
            time.sleep(0.2)
        sender.join()
        counters = RedisCounters(connect(url), "freshrec")
        deadline = time.monotonic() + args.drain_timeout_s
        got: dict[str, dict[str, int]] = {}
        while time.monotonic() < deadline:
            worker.check()
            got = counters.arm_totals()
            if all(got.get(a, {}).get(t, 0) >= n for (a, t), n in truth.items()):
                break
            time.sleep(1.0)
        time.sleep(3.0)  # let a last checkpoint flush anything beyond the truth (duplicates)
        got = counters.arm_totals()
        rc = worker.stop()
        dead = read_dlq(stack.bootstrap)
        redis.stop()
    counter_diff = {f"{a}:{t}": got.get(a, {}).get(t, 0) - n for (a, t), n in truth.items()
                    if got.get(a, {}).get(t, 0) != n}
    sources = Counter(src for _, src in dead)
    dup_dead = sum(n - 1 for n in sources.values() if n > 1)
    reasons_got = Counter(reason for reason, _ in dead)
    reasons_want = Counter(reason for _, reason in bad)
    ok = (not counter_diff and dup_dead == 0 and reasons_got == reasons_want
          and worker.unexpected_exits == 0 and rc == 0)
    summary = {
        "ok": ok, "good_events": len(events), "hostile": len(bad), "kills": worker.kills,
        "redis_outage_s": args.redis_outage_s, "unexpected_exits": worker.unexpected_exits,
        "final_exit_code": rc, "counter_mismatches": counter_diff,
        "dlq_records": len(dead), "dlq_duplicates": dup_dead,
        "dlq_reasons_match": reasons_got == reasons_want,
        "seconds": round(time.monotonic() - start, 1), "workdir": str(work),
    }
    print("soak: " + json.dumps(summary))
    if not ok:
        print(f"soak: FAILED (worker log: {work / 'worker.log'})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
