"""The fault-injection soak (bench/soak.py) at CI scale: ``python -m bench.soak --smoke``.

A real worker under a kill -9, hostile messages, a Redis outage and a broker restart,
checked against ground truth. This is also the soak bench's smoke run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_soak_at_ci_scale_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "-m", "bench.soak", "--smoke", "--seed", "7",
                           "--json-out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=560, check=False)
    assert out.exists(), f"no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())["figures"]
    assert result["broker_restarts"] == 1
    assert result["counter_mismatches"] == {}
    assert result["dlq_duplicates"] == 0 and result["dlq_reasons_match"]
    assert result["labels"]["wrong"] == 0 and result["labels"]["missing"] == 0
    assert result["labels"]["negatives"] > 0
    assert result["unexpected_exits"] == 0 and result["final_exit_code"] == 0
    assert result["ok"], result
    assert proc.returncode == 0, proc.stderr[-3000:]
