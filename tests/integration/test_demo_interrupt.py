"""Ctrl-C in a terminal: SIGINT to the demo's whole process group stops it cleanly.

A terminal sends SIGINT to every process of its foreground group. The embedded broker and
Redis run in their own sessions, so the demo gets it first, stops them in order, prints
its summary and exits 0 — no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(400)
def test_ctrl_c_in_a_terminal_prints_the_summary_and_exits_0(tmp_path):
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "worker.tools.cli", "demo", "--duration-s", "600",
         "--prewarm-requests", "500", "--rate", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # running for real: a view line has been printed
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("t="):
            break
    assert any(x.startswith("t=") for x in lines), "".join(lines)[-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, _ = proc.communicate(timeout=120)
    text = "".join(lines) + out
    assert proc.returncode == 0, text[-3000:]
    assert "summary: " in text and "headline: " in text
    assert "Traceback" not in text
    assert "redis-url redis://127.0.0.1:" in text  # the copy-paste commands were printed
