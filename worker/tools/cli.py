"""The ``freshrec`` command line: wiring only; every behaviour lives in a library module."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

import numpy as np

from worker.config import Settings, load_settings
from worker.tools.errors import describe_error
from worker.tools.overrides import set_overrides

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = set_overrides(args.set or [])
    for flag, section, key in (("bootstrap_servers", "kafka", "bootstrap_servers"),
                               ("redis_url", "redis", "url"), ("group_id", "kafka", "group_id"),
                               ("metrics_port", "metrics", "port")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return load_settings(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """The worker against the configured Kafka and Redis, until SIGINT/SIGTERM."""
    from worker.runtime.app import build_app, build_ingest_app  # noqa: PLC0415 - fast --help

    settings = _settings(args)
    app = build_ingest_app(settings) if args.role == "ingest" else build_app(settings,
                                                                              role=args.role)
    restored = app.worker.restore()
    rank = os.environ.get("RANK", "0") if args.role == "train" else "0"
    print(f"freshrec worker: role={args.role} group={settings.kafka.group_id} rank={rank} "
          f"restored={restored}", flush=True)
    if settings.metrics.port:  # trainer ranks on one machine: one port each
        port = settings.metrics.port + int(os.environ.get("LOCAL_RANK", "0"))
        app.metrics.serve(settings.metrics.host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        app.worker.run(stop)
    finally:
        app.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded broker + Redis + worker + simulator in one process tree."""
    from worker.tools.demo import DemoOptions, run_demo  # noqa: PLC0415

    overrides = set_overrides(args.set or [])
    if args.metrics_port is not None:
        overrides.setdefault("metrics", {})["port"] = args.metrics_port
    opts = DemoOptions(args.duration_s, args.rate, None if args.no_shift else args.shift_at_s,
                       args.seed, args.history_out, args.workdir,
                       prewarm_requests=args.prewarm_requests,
                       new_item_every=args.new_item_every)
    run_demo(args.config, overrides, opts, sys.stdout)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Traffic generator against the configured broker, ranking like an app would.

    With ``--serve-url`` every slate comes from ``freshrec serve`` over HTTP; without it,
    from the same serving rules in-process on the configured Redis.
    """
    from dataclasses import replace  # noqa: PLC0415

    from consumers.kafka_source import KafkaEventProducer, ensure_topics  # noqa: PLC0415
    from worker.runtime.app import counters, redis_client, vector_store  # noqa: PLC0415
    from worker.serving.client import HttpRankClient  # noqa: PLC0415
    from worker.serving.service import RankService, SlateSource  # noqa: PLC0415
    from worker.tools.simulate import SimConfig, Simulator  # noqa: PLC0415
    from worker.tools.traffic import drive  # noqa: PLC0415

    settings = _settings(args)
    k, exp = settings.kafka, settings.experiment
    if k.create_topics:
        ensure_topics(k.client_options(), {k.events_topic: k.partitions, k.items_topic: 1})
    producer = KafkaEventProducer(k.client_options())
    slates: SlateSource
    if args.serve_url:
        slates = HttpRankClient(args.serve_url, token=settings.serve.token())
    else:
        client = redis_client(settings)
        slates = RankService(vector_store(settings, client), exp.arms, exp.salt,
                             counters(settings, client), args.seed)
    cfg = replace(SimConfig(seed=args.seed), shift_at_request=args.shift_at_request)
    sim = Simulator(cfg, list(exp.arms), slates, producer.emit,
                    (k.events_topic, k.items_topic), exp.salt)
    sim.publish_catalog()
    drive(sim, args.rate, producer.flush, requests=args.requests)
    producer.close()
    print(json.dumps({"requests": sim.requests, "unserved": sim.unserved, "ctr": sim.ctr(),
                      "impressions": dict(sim.impressions), "clicks": dict(sim.clicks)}))
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    """Print the vectors of items for an arm (JSON: version, and per item a list or null)."""
    from worker.runtime.app import vector_store  # noqa: PLC0415

    store = vector_store(_settings(args))
    version, vecs, found = store.lookup(args.arm, args.items)
    out = {"arm": args.arm, "version": version,
           "vectors": {i: (np.round(v, 6).tolist() if f else None)
                       for i, v, f in zip(args.items, vecs, found, strict=True)}}
    print(json.dumps(out))
    return 0 if version is not None else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Current version, retained versions and pin of every arm, and the experiment so far."""
    from worker.runtime.status import deployment_status  # noqa: PLC0415

    print(json.dumps(deployment_status(_settings(args)), indent=2))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Flip an arm back to its previous version and pin it (or --release the pin)."""
    from worker.runtime.app import vector_store  # noqa: PLC0415

    store = vector_store(_settings(args))
    if args.release:
        store.unpin(args.arm)
        print(json.dumps({"arm": args.arm, "pinned": None}))
        return 0
    try:
        version = store.rollback(args.arm)
    except LookupError as exc:
        print(f"rollback failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"arm": args.arm, "current": version, "pinned": version}))
    return 0


def cmd_ramp(args: argparse.Namespace) -> int:
    """Release an arm a guardrail stopped: back to its step's share, harm test from now."""
    from worker.runtime.app import counters, ramp_controller, redis_client  # noqa: PLC0415

    settings = _settings(args)
    client = redis_client(settings)
    controller = ramp_controller(settings, client)
    try:
        state = controller.release(args.arm, counters(settings, client).arm_totals())
    except ValueError as exc:
        print(f"ramp release failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"arm": args.arm, "step": state.step, "share": state.share,
                      "stopped": state.stopped}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP lookup and ranking service on the configured Redis, until SIGINT/SIGTERM."""
    import uvicorn  # noqa: PLC0415

    from worker.runtime.app import build_serve  # noqa: PLC0415

    overrides = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = _settings(args)
    if overrides:
        settings = settings.model_copy(
            update={"serve": settings.serve.model_copy(update=overrides)})
    cfg = settings.serve
    app = build_serve(settings)
    print(f"freshrec serve: http://{cfg.host}:{cfg.port} (Redis {settings.redis.url})",
          flush=True)
    import gc  # noqa: PLC0415

    # What is loaded now lives as long as the process: keep it out of every collection,
    # so a full collection does not land in a request's latency.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """PNG charts from a demo's --history-out file."""
    from worker.tools.report import write_report  # noqa: PLC0415

    for path in write_report(args.history, args.out):
        print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="freshrec", description="Streaming incremental-learning "
                                "worker for recommender systems.")
    p.add_argument("--log-level", default=os.environ.get("FRESHREC_LOG_LEVEL", "WARNING"))
    p.add_argument("--verbose", action="store_true", help="print tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="TOML config file (see docs/configuration.md)")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override any setting, e.g. --set training.lr=0.005")
        sp.add_argument("--bootstrap-servers", dest="bootstrap_servers")
        sp.add_argument("--redis-url", dest="redis_url")

    run = sub.add_parser("run", help="run the worker against Kafka and Redis")
    common(run)
    run.add_argument("--group-id", dest="group_id")
    run.add_argument("--metrics-port", dest="metrics_port", type=int)
    run.add_argument("--role", choices=("all", "ingest", "train"), default="all",
                     help="all: everything in one process; ingest: events -> samples topic "
                          "(scale by partitions); train: samples topic -> vectors")
    run.set_defaults(fn=cmd_run)

    demo = sub.add_parser("demo", help="embedded broker + Redis + worker + simulator")
    demo.add_argument("--config")
    demo.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    demo.add_argument("--duration-s", type=float, default=180.0)
    demo.add_argument("--rate", type=float, default=120.0, help="requests per second")
    demo.add_argument("--shift-at-s", type=float, default=90.0)
    demo.add_argument("--no-shift", action="store_true")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--metrics-port", type=int, default=None)
    demo.add_argument("--history-out", help="write one JSON status line per view tick here")
    demo.add_argument("--workdir", help="keep broker/Redis logs and checkpoints here")
    demo.add_argument("--prewarm-requests", type=int, default=8000,
                      help="requests of user history served before the measured run")
    demo.add_argument("--new-item-every", type=int, default=25,
                      help="requests between new catalog items (0: a fixed catalog)")
    demo.set_defaults(fn=cmd_demo)

    sim = sub.add_parser("simulate", help="traffic generator against any broker")
    common(sim)
    sim.add_argument("--requests", type=int, default=10_000)
    sim.add_argument("--rate", type=float, default=200.0)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--shift-at-request", type=int, default=None)
    sim.add_argument("--serve-url", help="rank through freshrec serve at this URL "
                     "(default: the serving rules in-process on the configured Redis)")
    sim.set_defaults(fn=cmd_simulate)

    lookup = sub.add_parser("lookup", help="print item vectors of an arm")
    common(lookup)
    lookup.add_argument("--arm", required=True)
    lookup.add_argument("items", nargs="+")
    lookup.set_defaults(fn=cmd_lookup)

    status = sub.add_parser("status", help="versions and pins of every arm")
    common(status)
    status.set_defaults(fn=cmd_status)

    rollback = sub.add_parser("rollback", help="flip an arm back to its previous version")
    common(rollback)
    rollback.add_argument("--arm", required=True)
    rollback.add_argument("--release", action="store_true", help="remove the rollback pin")
    rollback.set_defaults(fn=cmd_rollback)

    ramp = sub.add_parser("ramp", help="guarded ramps: release an arm a guardrail stopped")
    ramp_sub = ramp.add_subparsers(dest="ramp_command", required=True)
    release = ramp_sub.add_parser("release", help="resume a stopped arm at its step's share")
    common(release)
    release.add_argument("arm")
    release.set_defaults(fn=cmd_ramp)

    serve = sub.add_parser("serve", help="HTTP service: item vectors and ranked slates")
    common(serve)
    serve.add_argument("--host", help="listen address (default serve.host)")
    serve.add_argument("--port", type=int, help="listen port (default serve.port)")
    serve.set_defaults(fn=cmd_serve)

    report = sub.add_parser("report", help="PNG charts from a run's history (demo --history-out)")
    report.add_argument("--history", required=True, help="JSON lines written by demo")
    report.add_argument("--out", default="freshrec-report", help="output directory")
    report.set_defaults(fn=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``freshrec`` console script.

    Errors are one actionable line on stderr (exit 2 for usage and configuration, 1 for
    an unreachable dependency); ``--verbose`` adds the traceback.
    """
    args = _parser().parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck process does.
    if sys.__stderr__ is not None:
        with contextlib.suppress(ValueError, OSError):  # a stderr that is not a file
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's boundary: one line, not a trace
        message, code = describe_error(exc, args)
        print(f"freshrec: {message}", file=sys.stderr)
        if args.verbose:
            import traceback  # noqa: PLC0415

            traceback.print_exc()
        else:
            print("freshrec: (run with --verbose for the traceback)", file=sys.stderr)
        return code


def _run(args: argparse.Namespace) -> int:
    level = logging.getLevelName(args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != logging.DEBUG and not args.verbose:
        # kafka-python logs every refused connection and slow IO task (ours are training
        # cycles, by design); the worker reports what matters itself, in one line.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
