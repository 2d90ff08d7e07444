"""The recorded demo run: ``freshrec demo`` end to end, its summary and its chart.

    python -m bench.demo [--duration-s 180] [--shift-at-s 90]

Runs the real demo (embedded broker, Redis, worker, ``freshrec serve``, the simulated app
asking it for every slate) with the given length, then ``freshrec report`` on its history.
A full run records the history and the chart the README shows (``docs/demo-history.jsonl``,
``docs/freshrec-report.png``) and writes the summary as the bench's result: the lift of
``fresh`` over the frozen ``control`` with its interval and both p-values, when each drift
alert first rose against the shift, and how many requests were served. A ``--smoke`` run
writes both files to a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.results import ROOT, emit, parser, target


def main() -> int:
    ap = parser("bench.demo", __doc__)
    ap.add_argument("--duration-s", type=float, default=180.0)
    ap.add_argument("--shift-at-s", type=float, default=90.0)
    args = ap.parse_args()
    if args.smoke:
        args.duration_s, args.shift_at_s = 25.0, 12.0
    out = Path(tempfile.mkdtemp(prefix="bench-demo-")) if args.smoke else ROOT / "docs"
    history = out / "demo-history.jsonl"
    demo = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "worker.tools.cli", "demo", "--duration-s",
         str(args.duration_s), "--shift-at-s", str(args.shift_at_s), "--history-out",
         str(history)], capture_output=True, text=True, check=False)
    text = demo.stdout
    if demo.returncode != 0 or "summary: " not in text:
        print(text[-3000:], demo.stderr[-3000:], sep="\n", file=sys.stderr)
        return 1
    summary = json.loads(text[text.index("summary: ") + 9: text.index("\nheadline:")])
    headline = text[text.index("headline:"):].splitlines()[0]
    print(headline)
    report = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "worker.tools.cli", "report", "--history", str(history),
         "--out", str(out)], capture_output=True, text=True, check=False)
    if report.returncode != 0:
        print(report.stderr[-3000:], file=sys.stderr)
        return 1
    drift = summary.get("drift_alerts", {}).get("first_alert_s", {})
    early = {k: v for k, v in drift.items() if v < args.shift_at_s}
    figures = {"headline": headline.removeprefix("headline:").strip().strip('"'), **summary}
    emit("bench.demo", args, figures, {"drift alerts before the shift": target(
        len(early), "<=", 0)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
