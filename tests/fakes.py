"""In-memory stand-ins for the outside world, for pure-logic unit tests."""

from __future__ import annotations

from worker.tools.synthetic import ListSource

__all__ = ["ListSource"]
