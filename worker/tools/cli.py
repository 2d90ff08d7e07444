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

from worker.tools.errors import describe_error
from worker.tools.ope import add_ope_command
from worker.tools.operate import add_operator_commands
from worker.tools.overrides import add_common, set_overrides, settings_from_args

__all__ = ["main"]


def cmd_run(args: argparse.Namespace) -> int:
    """The worker against the configured Kafka and Redis, until SIGINT/SIGTERM."""
    from worker.runtime.app import build_app, build_ingest_app  # noqa: PLC0415 - fast --help

    settings = settings_from_args(args)
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

    settings = settings_from_args(args)
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


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP lookup and ranking service on the configured Redis, until SIGINT/SIGTERM."""
    import uvicorn  # noqa: PLC0415

    from worker.runtime.app import build_serve  # noqa: PLC0415

    overrides = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = settings_from_args(args)
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

    run = sub.add_parser("run", help="run the worker against Kafka and Redis")
    add_common(run)
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
    add_common(sim)
    sim.add_argument("--requests", type=int, default=10_000)
    sim.add_argument("--rate", type=float, default=200.0)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--shift-at-request", type=int, default=None)
    sim.add_argument("--serve-url", help="rank through freshrec serve at this URL "
                     "(default: the serving rules in-process on the configured Redis)")
    sim.set_defaults(fn=cmd_simulate)

    add_operator_commands(sub)
    add_ope_command(sub)

    serve = sub.add_parser("serve", help="HTTP service: item vectors and ranked slates")
    add_common(serve)
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
