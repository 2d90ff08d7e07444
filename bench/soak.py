"""Fault-injection soak: a real ``freshrec run`` under kill -9s, hostile messages, outages.

An external producer sends seeded good traffic (two arms) with hostile messages between
the events: a 10 MiB value, invalid UTF-8 inside a string, 10k-deep nesting, timestamps
ten years ahead, 2**63 and in seconds, non-JSON and missing fields. Meanwhile the worker is
SIGKILLed at random moments and restarted, Redis is stopped for a while and started again
(the same server, with its data), and the broker is restarted; then, each with its own flag
(``bench/faults.py``): Redis slow (a proxy delays every chunk), a Redis failover (the
worker's server a read-only replica for a while), a full checkpoint disk (the worker's
file-size limit at one byte) and a frozen broker (SIGSTOP) while the worker holds
uncommitted work. Lone surrogates, NULs in ids, ids over the limit, keys written twice and
malformed catalog messages are among the hostile ones. At the end the soak compares
the per-arm counters in Redis, every impression's label and the dead-letter topic with the
ground truth it computed itself, prints one summary line, and exits non-zero on any loss,
duplicate, unexpected exit or crash loop.

    python -m bench.soak                       # the issue's acceptance scale
    python -m bench.soak --events 3000 --hostile 600 --kills 2 --redis-outage-s 3

Besides the random kills, one lands ``--kill-after-outage-s`` after Redis is back.

Half-way the producer pauses, the soak waits until the worker has taken in everything sent
so far, and restarts the broker: the embedded broker keeps its log in memory, so it comes
back as a new, empty cluster (topics re-created, committed offsets gone), as after losing
a broker's disks. The final labels are checked impression by impression against the
worker's last checkpoint.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.faults import FaultLog, RedisPair, freeze, limit_files
from bench.results import emit, parser, target
from consumers.dlq import source_of
from consumers.joiner import Joiner
from consumers.kafka_source import ensure_topics
from consumers.log_end import read_to_end
from model_store.checkpoints import CheckpointStore
from model_store.counters import RedisCounters
from model_store.redis_store import connect
from worker.tools.embedded import (
    EmbeddedStack,
    free_port,
)
from worker.tools.synthetic import encode, traffic

TOPIC, ITEMS, DLQ = "soak.events", "soak.items", "soak.dlq"


def hostile(k: int, now_ms: int, rng: random.Random) -> tuple[bytes, str, str]:
    """The k-th hostile message, the reason it must be dead-lettered with, and its topic."""
    base = {"event_id": f"bad-{k}", "ts": now_ms, "type": "click", "user_id": "u1",
            "item_id": "i1", "request_id": f"bad-r{k}", "arm": "fresh"}
    kind = k % 13
    if kind == 0:
        return encode(base).replace(b'"bad-', b'"\xff\xfe-', 1), "not_utf8", TOPIC
    if kind == 1:
        return b"[" * 10_000 + b"]" * 10_000, "not_json", TOPIC
    if kind == 2:
        return encode({**base, "ts": now_ms + 10 * 365 * 86_400_000}), "bad_ts", TOPIC
    if kind == 3:
        return encode({**base, "ts": 2**63}), "bad_ts", TOPIC
    if kind == 4:
        return encode({**base, "ts": now_ms // 1000}), "bad_ts", TOPIC
    if kind == 5:
        return b"{not json" + bytes([rng.randrange(32, 127)]), "not_json", TOPIC
    if kind == 6:
        return encode({k2: v for k2, v in base.items() if k2 != "user_id"}), "missing_field", TOPIC
    if kind == 7:
        return encode({**base, "pad": "x" * 70_000}), "too_large", TOPIC
    if kind == 8:  # a lone surrogate escape: no UTF-8 form
        return encode(base).replace(b'"u1"', b'"u\\ud800"', 1), "not_json", TOPIC
    if kind == 9:  # a NUL in an id
        return encode({**base, "user_id": "u\x001"}), "bad_value", TOPIC
    if kind == 10:  # one character over the id limit
        return encode({**base, "item_id": "i" * 257}), "bad_value", TOPIC
    if kind == 11:  # a key written twice, the earlier occurrence of the wrong type
        return b'{"ts":"soon",' + encode(base)[1:], "bad_type", TOPIC
    return encode({"item_id": f"bad-i{k}", "ts": now_ms, "text": " "}), "bad_value", ITEMS


def _copy(src: Any, log: Path) -> None:
    with open(log, "ab") as out:
        for chunk in iter(lambda: src.read1(65536), b""):
            out.write(chunk)
            out.flush()


class Worker:
    """The worker process: started, SIGKILLed, restarted; unexpected exits are counted."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.unexpected_exits = 0
        self.kills = 0

    def start(self) -> None:
        """Spawn the worker (its own session: our Ctrl-C does not reach it).

        Its output comes through a pipe that this process copies to the log: a full disk
        injected into the worker (a file-size limit) leaves its log intact.
        """
        self.proc = subprocess.Popen(  # noqa: S603 - argv built above
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        threading.Thread(target=_copy, args=(self.proc.stdout, self.log), daemon=True).start()

    def pid(self) -> int:
        """The running worker's process id."""
        assert self.proc is not None
        return self.proc.pid

    def check(self) -> None:
        """Count and restart an exit we did not cause."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits += 1
            self.start()

    def dump_stacks(self) -> None:
        """Ask the worker to print every thread's stack into its log (a stall's evidence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    def kill9(self) -> None:
        """SIGKILL the worker, then start it again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.kills += 1
        self.start()

    def kill(self) -> None:
        """SIGKILL without a restart (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

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


class Producer(threading.Thread):
    """Sends the messages at a fixed rate; can stop at a message index until resumed."""

    def __init__(self, bootstrap: str, messages: list[tuple[str, bytes, bytes]], rate: float,
                 pause_at: int | None) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.messages, self.rate, self.pause_at = (bootstrap, messages,
                                                                   rate, pause_at)
        self.paused, self.resume = threading.Event(), threading.Event()

    def _client(self) -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=[self.bootstrap], acks="all", linger_ms=5,
                             max_request_size=16 << 20)

    def run(self) -> None:
        """Send everything; at ``pause_at`` flush, signal ``paused`` and wait for ``resume``.

        Every send is checked: one the broker did not acknowledge (a restarted broker whose
        re-created topics are not ready yet) is sent again, so the truth the soak compares
        against is what the broker really holds.
        """
        producer = self._client()
        start, sent_before = time.monotonic(), 0
        pending: list[tuple[Any, str, bytes, bytes]] = []
        for n, (topic, key, value) in enumerate(self.messages):
            if n == self.pause_at:
                self._confirm(producer, pending)
                producer.close()
                self.paused.set()
                self.resume.wait()
                producer = self._client()  # a new connection to the restarted broker
                start, sent_before = time.monotonic(), n
            pending.append((producer.send(topic, key=key, value=value), topic, key, value))
            ahead = (n + 1 - sent_before) / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        self._confirm(producer, pending)
        producer.close()

    @staticmethod
    def _confirm(producer: KafkaProducer, pending: list[tuple[Any, str, bytes, bytes]]) -> None:
        producer.flush()
        for first, topic, key, value in pending:
            future = first
            for attempt in range(20):
                try:
                    future.get(timeout=30)
                    break
                except Exception:  # noqa: BLE001 - not acknowledged: send it again
                    time.sleep(0.5 * (attempt + 1))
                    future = producer.send(topic, key=key, value=value)
                    producer.flush()
            else:
                raise RuntimeError("the broker never acknowledged a message")
        pending.clear()


def interleave(events: list[dict[str, Any]], bad: list[tuple[bytes, str, str]],
               seed: int) -> list[tuple[str, bytes, bytes, str]]:
    """Good and hostile messages as (topic, key, value, tag), hostile ones at random places.

    The tag is "arm:type" for a good event and "dlq:reason" for a hostile message.
    """
    rng = random.Random(seed)
    out = [(TOPIC, e["user_id"].encode(), encode(e), f"{e['arm']}:{e['type']}")
           for e in events]
    for value, reason, topic in bad:
        out.insert(rng.randrange(len(out) + 1), (topic, b"u-bad", value, f"dlq:{reason}"))
    return out


def drained(counters: RedisCounters, bootstrap: str, truth: Counter[str],
            dead_before: int) -> bool:
    """True once Redis holds every good event in ``truth`` and the DLQ every hostile one."""
    got = counters.arm_totals()
    good = all(got.get(tag.split(":")[0], {}).get(tag.split(":")[1], 0) >= n
               for tag, n in truth.items() if not tag.startswith("dlq:"))
    want_dead = sum(n for tag, n in truth.items() if tag.startswith("dlq:"))
    return good and dead_before + len(read_dlq(bootstrap)) >= want_dead


def read_dlq(bootstrap: str) -> list[tuple[str | None, Any]]:
    """Every dead letter on the DLQ as (reason, source), read to the exact log end."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    out: list[tuple[str | None, Any]] = []

    def keep(r: Any) -> None:
        h = dict(r.headers or [])
        out.append((h.get("freshrec.reason", b"").decode() or None,
                    source_of(list(r.headers or []))))

    try:
        read_to_end(consumer, {TopicPartition(DLQ, 0): 0}, keep)
    finally:
        consumer.close()
    return out


def check_labels(events: list[dict[str, Any]], ckpt_dir: Path) -> dict[str, int]:
    """Compare every impression's label in the worker's last checkpoint with the truth.

    The joiner remembers each closed (request, item) key with its label (``closed``) and
    holds the still-open ones (``pending``); with clicks 2 s after their impression and a
    5 s window, an impression is positive exactly when the stream holds its click.
    """
    clicked = {(e["request_id"], e["item_id"]) for e in events if e["type"] == "click"}
    shown = {(e["request_id"], e["item_id"]) for e in events if e["type"] == "impression"}
    joiner = Joiner()
    chain = CheckpointStore(ckpt_dir).load_latest()  # closed keys: base first, then deltas
    for ckpt in chain:
        joiner.load_state_dict(ckpt.state["ingest"]["joiner"], final=ckpt is chain[-1])
    closed, pending = joiner.labels()
    wrong = sum(1 for key in shown if key in closed and closed[key] != (key in clicked))
    missing = sum(1 for key in shown if key not in closed and key not in pending)
    return {"impressions": len(shown), "positives": sum(closed.values()),
            "negatives": sum(1 for v in closed.values() if not v), "open": len(pending),
            "wrong": wrong, "missing": missing}


def main() -> int:  # noqa: PLR0915 - one scenario, read top to bottom
    ap = parser("bench.soak", __doc__)
    ap.add_argument("--events", type=int, default=50_000, help="good events (about)")
    ap.add_argument("--hostile", type=int, default=20_000)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--redis-outage-s", type=float, default=20.0)
    ap.add_argument("--kill-after-outage-s", type=float, default=0.2,
                    help="one more kill this long after Redis is back (negative: none)")
    ap.add_argument("--no-broker-restart", action="store_true",
                    help="skip the broker restart half-way")
    ap.add_argument("--slow-redis-s", type=float, default=10.0,
                    help="Redis slow this long (0: not)")
    ap.add_argument("--slow-redis-delay-s", type=float, default=0.2,
                    help="delay per chunk while Redis is slow (inside the 10 s timeout)")
    ap.add_argument("--redis-failover-s", type=float, default=10.0,
                    help="the worker's Redis a read-only replica this long (0: not)")
    ap.add_argument("--disk-full-s", type=float, default=10.0,
                    help="checkpoint writes failing this long (0: not)")
    ap.add_argument("--broker-freeze-s", type=float, default=10.0,
                    help="broker frozen (SIGSTOP) this long mid-stream (0: not)")
    # ~100 s of traffic at the defaults: every fault of the schedule lands while it flows.
    ap.add_argument("--rate", type=float, default=700.0, help="messages per second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--drain-timeout-s", type=float, default=600.0)
    args = ap.parse_args()
    if args.smoke:  # the test suite's scale (tests/integration/test_soak.py)
        args.events, args.hostile, args.kills, args.redis_outage_s = 1500, 300, 1, 3.0
        args.slow_redis_s = args.redis_failover_s = args.disk_full_s = 2.0
        args.broker_freeze_s = 2.0
        args.rate, args.drain_timeout_s = 150.0, 300.0  # ~12 s of traffic for the faults
    result = soak(args)
    print("soak: " + json.dumps(result))
    figures = {k: v for k, v in result.items() if k != "workdir"}
    emit("bench.soak", args, figures, {"ok": target(int(bool(result["ok"])), ">=", 1)})
    if not result["ok"]:
        print(f"soak: FAILED (worker log: {result['workdir']}/worker.log)", file=sys.stderr)
    return 0 if result["ok"] else 1


def fault_schedule(args: argparse.Namespace, total: float, pair: RedisPair,
                   stack: EmbeddedStack, worker: Worker
                   ) -> list[tuple[float, str, float, Callable[[], None]]]:
    """(when, name, seconds, inject) for each fault the flags turn on, in time order."""
    plan: list[tuple[float, str, float, Callable[[], None]]] = []
    if args.slow_redis_s > 0:
        plan.append((0.15 * total, "slow_redis", args.slow_redis_s,
                     lambda: pair.slow(args.slow_redis_s, args.slow_redis_delay_s)))
    if args.redis_failover_s > 0:
        # Between the slow spell and the outage, while traffic flows (the broker restart
        # half-way pauses it).
        plan.append((0.22 * total, "redis_failover", args.redis_failover_s,
                     lambda: pair.failover(args.redis_failover_s)))
    if args.disk_full_s > 0:
        plan.append((0.6 * total, "checkpoint_disk_full", args.disk_full_s,
                     lambda: limit_files(worker.pid(), args.disk_full_s)))
    if args.broker_freeze_s > 0:
        plan.append((0.75 * total, "broker_freeze", args.broker_freeze_s,
                     lambda: freeze(broker_pid(stack), args.broker_freeze_s)))
    return sorted(plan, key=lambda f: f[0])


def wait_ready(port: int, worker: Worker, timeout_s: float = 180.0) -> None:
    """Until the worker's ``/readyz`` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",  # noqa: S310
                                        timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the worker never became ready")


def broker_pid(stack: EmbeddedStack) -> int:
    """The broker's process id now (it changes when the broker is restarted)."""
    assert stack.broker.proc is not None
    return stack.broker.proc.pid


def soak(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915
    """Run the scenario; the summary (``ok`` false on any loss, duplicate or crash)."""
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="freshrec-soak-"))
    now_ms = time.time_ns() // 1_000_000
    requests = max(1, int(args.events / 2.6))  # traffic() makes ~2.6 events per request
    # Event time ends 10 minutes ago (100 ms per request): never ahead of the log time.
    events = list(traffic(requests, seed=args.seed, t0=now_ms - 600_000 - requests * 100,
                          users=500, items=2000, arms=("control", "fresh")))
    bad = [hostile(k, now_ms, rng) for k in range(args.hostile)]
    bad[0] = (b"x" * (10 << 20), "too_large", TOPIC)  # and one 10 MiB message
    messages = interleave(events, bad, args.seed)
    truth = Counter(tag for *_, tag in messages)
    pause_at = None if args.no_broker_restart else len(messages) // 2
    topics = {TOPIC: 4, ITEMS: 1, DLQ: 1}
    dead: list[tuple[str | None, Any]] = []
    dead_first_log = 0
    broker_restarts = 0
    with EmbeddedStack(work / "stack") as stack:
        metrics_port = free_port()
        pair = RedisPair(work)
        pair.start()
        redis = pair.primary
        url = pair.url  # the worker's Redis, through the fault-injecting proxy
        counters = RedisCounters(connect(pair.direct_url), "freshrec")
        ensure_topics({"bootstrap_servers": [stack.bootstrap]}, topics)
        verbose = ["--verbose"] if os.environ.get("FRESHREC_SOAK_VERBOSE") else []
        argv = [sys.executable, "-m", "worker.tools.cli", *verbose, "run",
                "--bootstrap-servers", stack.bootstrap, "--redis-url", url,
                "--group-id", "soak", "--metrics-port", str(metrics_port),
                "--set", f"kafka.events_topic={TOPIC}", "--set", f"kafka.items_topic={ITEMS}",
                "--set", f"kafka.dlq_topic={DLQ}", "--set", "ingest.join_window_s=5",
                "--set", f"store.checkpoint_dir={work / 'ckpt'}",
                "--set", "ingest.checkpoint_interval_s=1"]
        worker = Worker(argv, work / "worker.log")
        atexit.register(worker.kill)  # Ctrl-C of the soak leaves no worker behind
        worker.start()
        wait_ready(metrics_port, worker)  # faults land on a running worker, not a starting one
        start = time.monotonic()
        total = len(messages) / args.rate
        sender = Producer(stack.bootstrap, [(t, k, v) for t, k, v, _ in messages], args.rate,
                          pause_at)
        sender.start()
        kill_at = sorted(rng.uniform(0.1, 0.9) * total for _ in range(args.kills))
        outage_at = 0.3 * total
        outage_done = False
        faults = FaultLog(start)
        schedule = fault_schedule(args, total, pair, stack, worker)
        while sender.is_alive() or kill_at or schedule:
            t = time.monotonic() - start
            if kill_at and t >= kill_at[0]:
                kill_at.pop(0)
                worker.kill9()
                faults.note("kill", 0.0)
            if schedule and t >= schedule[0][0] and (schedule[0][1] != "broker_freeze"
                                                     or sender.resume.is_set() or
                                                     pause_at is None):
                _, name, seconds, inject = schedule.pop(0)
                inject()
                faults.note(name, seconds)
                worker.check()
            if not outage_done and t >= outage_at and args.redis_outage_s > 0:
                redis.stop()
                time.sleep(args.redis_outage_s)
                worker.check()
                redis.start()
                outage_done = True
                faults.note("redis_outage", args.redis_outage_s)
                if args.kill_after_outage_s >= 0:
                    # A kill as Redis comes back: the checkpoint the outage held back may be
                    # written while its commit is not.
                    time.sleep(args.kill_after_outage_s)
                    worker.kill9()
                    faults.note("kill", 0.0)
            if sender.paused.is_set() and not sender.resume.is_set():
                # The memory broker forgets its log on restart: let the worker take in
                # everything sent so far, keep the dead letters, then restart it empty.
                half = Counter(tag for *_, tag in messages[:pause_at])
                deadline = time.monotonic() + args.drain_timeout_s
                dump_at = time.monotonic() + 60.0
                while (not drained(counters, stack.bootstrap, half, 0)
                       and time.monotonic() < deadline):
                    worker.check()
                    if time.monotonic() > dump_at:  # stalled: keep the evidence
                        worker.dump_stacks()
                        dump_at = deadline
                    time.sleep(1.0)
                dead = read_dlq(stack.bootstrap)
                dead_first_log = len(dead)
                stack.broker.stop()
                stack.broker.start()
                broker_restarts += 1
                faults.note("broker_restart", 0.0)
                ensure_topics({"bootstrap_servers": [stack.bootstrap]}, topics)
                sender.resume.set()
            worker.check()
            time.sleep(0.2)
        sender.join()
        deadline = time.monotonic() + args.drain_timeout_s
        dump_at = time.monotonic() + 60.0
        while (not drained(counters, stack.bootstrap, truth, len(dead))
               and time.monotonic() < deadline):
            worker.check()
            if time.monotonic() > dump_at:  # stalled: keep the evidence
                worker.dump_stacks()
                dump_at = deadline
            time.sleep(1.0)
        time.sleep(3.0)  # let a last checkpoint flush anything beyond the truth (duplicates)
        got = counters.arm_totals()
        rc = worker.stop()
        dead += read_dlq(stack.bootstrap)
        pair.stop()
    labels = check_labels(events, work / "ckpt")
    counter_diff = {tag: got.get(tag.split(":")[0], {}).get(tag.split(":")[1], 0) - n
                    for tag, n in truth.items() if not tag.startswith("dlq:")}
    counter_diff = {tag: d for tag, d in counter_diff.items() if d}
    reasons_got = Counter(reason for reason, _ in dead)
    reasons_want = Counter(tag[4:] for tag in truth.elements() if tag.startswith("dlq:"))
    dup_dead = max(0, len(dead) - sum(reasons_want.values()))
    seen: dict[Any, list[int]] = {}
    for at, (_, src) in enumerate(dead):  # offsets restart in the broker's new log
        seen.setdefault((at >= dead_first_log, src), []).append(at)
    twice = sorted(at for at in seen.values() if len(at) > 1)
    ok = (not counter_diff and dup_dead == 0 and reasons_got == reasons_want
          and worker.unexpected_exits == 0 and rc == 0 and labels["wrong"] == 0
          and labels["missing"] == 0 and labels["negatives"] > 0)
    return {
        "ok": ok, "good_events": len(events), "hostile": len(bad), "kills": worker.kills,
        "redis_outage_s": args.redis_outage_s, "broker_restarts": broker_restarts,
        "unexpected_exits": worker.unexpected_exits, "final_exit_code": rc,
        "counter_mismatches": counter_diff, "dlq_records": len(dead),
        "dlq_duplicates": dup_dead,
        # Where copies sit in the DLQ (its first log, then the one after the broker restart).
        "dlq_duplicate_examples": [[dead[at[0]][1], at]
                                   for at in twice[:: max(1, len(twice) // 4)]],
        "dlq_first_log": dead_first_log,
        "dlq_reasons_match": reasons_got == reasons_want,
        "labels": labels, "faults": faults.done,
        "seconds": round(time.monotonic() - start, 1), "workdir": str(work),
    }


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
