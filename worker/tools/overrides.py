"""``--set section.key=value`` flags -> the nested overrides the settings loader takes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from worker.config import Settings, load_settings

__all__ = ["UsageError", "add_common", "set_overrides", "settings_from_args"]


class UsageError(Exception):
    """A mistake in the command line or configuration: reported in one line, exit 2."""


def _is_secret(key: str) -> bool:
    return key == "password" or key.endswith(("_password", "_secret", "_token"))


def set_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``section.key=value`` pairs -> nested dict (values parsed as JSON when they can be).

    Secrets stay strings whatever they look like: a numeric password parsed as JSON would
    become an int, fail validation, and be echoed in the error.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        path, sep, raw = pair.partition("=")
        if not sep or "." not in path:
            raise UsageError(f"--set expects section.key=value, got {path!r}")
        value: Any = raw
        if not _is_secret(path.rsplit(".", 1)[-1]):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings tree: config file, env, then --set and the named flags on top."""
    overrides = set_overrides(args.set or [])
    for flag, section, key in (("bootstrap_servers", "kafka", "bootstrap_servers"),
                               ("redis_url", "redis", "url"), ("group_id", "kafka", "group_id"),
                               ("metrics_port", "metrics", "port")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return load_settings(args.config, overrides)


def add_common(sp: argparse.ArgumentParser) -> None:
    """The flags every command that reaches Kafka or Redis takes."""
    sp.add_argument("--config", help="TOML config file (see docs/configuration.md)")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override any setting, e.g. --set training.lr=0.005")
    sp.add_argument("--bootstrap-servers", dest="bootstrap_servers")
    sp.add_argument("--redis-url", dest="redis_url")
