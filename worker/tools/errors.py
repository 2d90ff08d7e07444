"""Turn an exception at the CLI's boundary into one actionable line and an exit code.

Configuration values are never echoed (a secret may be among them); only the setting's
path and what is wrong with it.
"""

from __future__ import annotations

import argparse
import tomllib
from typing import Any

from pydantic import ValidationError

from consumers.base import SourceUnavailable
from model_store.base import StoreUnavailable

__all__ = ["describe_error"]

USAGE, UNAVAILABLE = 2, 1


def describe_error(exc: BaseException, args: argparse.Namespace) -> tuple[str, int]:
    """(message, exit code) for ``exc`` raised while running ``args``' command."""
    if isinstance(exc, ValidationError):
        return "invalid settings: " + "; ".join(_problem(e) for e in exc.errors()), USAGE
    if isinstance(exc, SourceUnavailable):
        return (f"{exc} - is the broker running and reachable? "
                "(--bootstrap-servers or FRESHREC_KAFKA__BOOTSTRAP_SERVERS)"), UNAVAILABLE
    if isinstance(exc, StoreUnavailable):
        return (f"cannot reach Redis ({_first_line(exc)}) - is it running? "
                "(--redis-url or FRESHREC_REDIS__URL)"), UNAVAILABLE
    if isinstance(exc, FileNotFoundError) and getattr(args, "config", None):
        return f"config file not found: {exc.filename}", USAGE
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"config file is not valid TOML: {exc}", USAGE
    if type(exc).__name__ == "UsageError":
        return str(exc), USAGE
    return f"{type(exc).__name__}: {_first_line(exc)}", UNAVAILABLE


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "settings"
    return f"{where}: {error.get('msg', 'invalid')}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
