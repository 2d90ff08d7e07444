"""``--set section.key=value`` flags -> the nested overrides the settings loader takes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["UsageError", "set_overrides"]


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
