"""Operator commands: look up vectors, show status, roll back, release a stopped ramp."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from worker.tools.overrides import add_common, settings_from_args

__all__ = ["add_operator_commands"]


def cmd_lookup(args: argparse.Namespace) -> int:
    """Print the vectors of items for an arm (JSON: version, and per item a list or null)."""
    from worker.runtime.app import vector_store  # noqa: PLC0415

    store = vector_store(settings_from_args(args))
    version, vecs, found = store.lookup(args.arm, args.items)
    out = {"arm": args.arm, "version": version,
           "vectors": {i: (np.round(v, 6).tolist() if f else None)
                       for i, v, f in zip(args.items, vecs, found, strict=True)}}
    print(json.dumps(out))
    return 0 if version is not None else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Current version, retained versions and pin of every arm, and the experiment so far."""
    from worker.runtime.status import deployment_status  # noqa: PLC0415

    print(json.dumps(deployment_status(settings_from_args(args)), indent=2))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Flip an arm back to its previous version and pin it (or --release the pin)."""
    from worker.runtime.app import vector_store  # noqa: PLC0415

    store = vector_store(settings_from_args(args))
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

    settings = settings_from_args(args)
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


def add_operator_commands(sub: Any) -> None:
    """Register the operator commands on the ``freshrec`` sub-parsers."""
    lookup = sub.add_parser("lookup", help="print item vectors of an arm")
    add_common(lookup)
    lookup.add_argument("--arm", required=True)
    lookup.add_argument("items", nargs="+")
    lookup.set_defaults(fn=cmd_lookup)

    status = sub.add_parser("status", help="versions and pins of every arm")
    add_common(status)
    status.set_defaults(fn=cmd_status)

    rollback = sub.add_parser("rollback", help="flip an arm back to its previous version")
    add_common(rollback)
    rollback.add_argument("--arm", required=True)
    rollback.add_argument("--release", action="store_true", help="remove the rollback pin")
    rollback.set_defaults(fn=cmd_rollback)

    ramp = sub.add_parser("ramp", help="guarded ramps: release an arm a guardrail stopped")
    ramp_sub = ramp.add_subparsers(dest="ramp_command", required=True)
    release = ramp_sub.add_parser("release", help="resume a stopped arm at its step's share")
    add_common(release)
    release.add_argument("arm")
    release.set_defaults(fn=cmd_ramp)
