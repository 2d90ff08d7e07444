"""The metrics page is the contract: every metric it names is exported, and nothing unnamed."""

from __future__ import annotations

import re
from pathlib import Path

from worker.runtime.metrics import Metrics
from worker.serving.metrics import ServeMetrics

PAGE = Path(__file__).resolve().parents[3] / "docs" / "contracts" / "metrics.md"


def exported() -> dict[str, str]:
    """Name as scraped (counters end in _total) -> metric family name."""
    names = {}
    serve = ServeMetrics()
    serve.watch_cache(type("Cache", (), {"ids_hit": 0, "ids_read": 0})())
    families = [*Metrics().registry.collect(), *serve.registry.collect()]
    for family in families:
        names[family.name + ("_total" if family.type == "counter" else "")] = family.name
    return names


def test_every_metric_the_docs_name_is_exported_and_every_exported_one_is_named():
    named = set(re.findall(r"freshrec_[a-z_]+[a-z]", PAGE.read_text()))
    ours = exported()
    assert named - set(ours) == set(), "named in docs/contracts/metrics.md but not exported"
    assert set(ours) - named == set(), "exported but not in docs/contracts/metrics.md"
