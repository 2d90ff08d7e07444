"""Every bench runs at its ``--smoke`` size and writes a result the docs generator reads.

An interface change that breaks a bench fails here, not in a reader's reproduction.
The soak's smoke run is ``test_soak.py`` (it checks the soak's own verdict too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
#: Bench scripts are the modules that build their flags with bench.results.parser; the
#: others (data loading, peers) are their helpers.
ALL = sorted(p.stem for p in (ROOT / "bench").glob("*.py")
             if f'parser("bench.{p.stem}"' in p.read_text())
BENCHES = [b for b in ALL if b != "soak"]


def run_smoke(name: str, tmp: Path, timeout_s: float = 420.0) -> dict[str, object]:
    """``python -m bench.<name> --smoke``; its JSON result."""
    out = tmp / f"{name}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke", "--json-out",
                           str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env=env, check=False)
    assert proc.returncode == 0, f"bench.{name} --smoke failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(out.read_text()))


@pytest.mark.timeout(480)
@pytest.mark.parametrize("name", BENCHES)
def test_bench_smoke_run_writes_its_result(name: str, tmp_path: Path) -> None:
    if name == "quiet" and shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed")
    result = run_smoke(name, tmp_path)
    assert result["bench"] == name
    assert str(result["command"]).startswith(f"python -m bench.{name} --smoke")
    assert result["figures"], "a bench with no figures"
    machine = result["machine"]
    assert isinstance(machine, dict) and machine["cores"] and machine["cpu"]
    assert result["revision"]
    for entry in dict(result["targets"]).values():  # type: ignore[call-overload]
        assert set(entry) == {"value", "target", "met"}


def test_every_bench_is_smoke_tested_and_documented() -> None:
    assert "soak" in ALL and len(ALL) >= 15
    names = set(ALL)
    from bench.docs import DESCRIPTIONS  # noqa: PLC0415
    assert set(DESCRIPTIONS) == names, "bench/docs.py describes every bench"
