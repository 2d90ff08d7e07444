"""The README is the contract: every metric it names is exported, and nothing unnamed."""

from __future__ import annotations

import re
from pathlib import Path

from worker.runtime.metrics import Metrics
from worker.serving.metrics import ServeMetrics

README = Path(__file__).resolve().parents[3] / "README.md"


def exported() -> dict[str, str]:
    """Name as scraped (counters end in _total) -> metric family name."""
    names = {}
    families = [*Metrics().registry.collect(), *ServeMetrics().registry.collect()]
    for family in families:
        names[family.name + ("_total" if family.type == "counter" else "")] = family.name
    return names


def test_every_metric_the_readme_names_is_exported_and_every_exported_one_is_named():
    named = set(re.findall(r"freshrec_[a-z_]+[a-z]", README.read_text()))
    ours = exported()
    assert named - set(ours) == set(), "named in the README but not exported"
    assert set(ours) - named == set(), "exported but not in the README"
