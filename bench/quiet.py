"""A stationary run must raise no alert: the demo without a shift, a real Prometheus beside it.

    python -m bench.quiet --duration-s 300

Runs ``freshrec demo --no-shift --new-item-every 0`` (embedded broker, Redis, worker,
serving, simulator; no preference shift, a fixed catalog) for the duration while a real
Prometheus scrapes its ``/metrics`` every 2 s and evaluates ``deploy/prometheus/rules.yml``.
Afterwards it prints the demo's drift alerts and every alert Prometheus had pending or
firing at any point, and exits non-zero if a drift alert rose or a Prometheus alert fired
(pending is reported, not failed: it has not held for its ``for:`` time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from bench.results import emit, parser, target
from worker.tools.embedded import ManagedProcess, free_port

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"


def prometheus(work: Path, target: int, interval: str = "2s") -> tuple[ManagedProcess, int]:
    """A real Prometheus scraping 127.0.0.1:target with the project's rules; ready.

    Ready means ``/-/ready`` answers 200 (it answers 503 while starting), not "port open".
    """
    port = free_port()
    cfg = work / "prometheus.yml"
    cfg.write_text(f"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n"
                   f"rule_files: ['{RULES}']\n"
                   "scrape_configs:\n  - job_name: freshrec\n"
                   f"    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n")
    server = ManagedProcess("prometheus", [
        "prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}"], port, work / "prometheus.log")

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready",  # noqa: S310
                                        timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    server.start(ready_timeout_s=120, ready=ready)
    return server, port


def query(port: int, expr: str) -> list[dict[str, object]]:
    """An instant query against the local Prometheus."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
        return list(json.load(resp)["data"]["result"])


def main() -> int:
    ap = parser("bench.quiet", __doc__)
    ap.add_argument("--duration-s", type=float, default=300.0)
    # A stationary world has a fixed catalog: with arrivals, the frozen control (the drift
    # reference) really does get worse (its CTR fell 0.40 -> 0.33 in 5 min), and the
    # detectors say so. Pass 25 (the demo's default) to see that.
    ap.add_argument("--new-item-every", type=int, default=0)
    args = ap.parse_args()
    if args.smoke:
        args.duration_s = 25.0
    work = Path(tempfile.mkdtemp(prefix="freshrec-quiet-"))
    metrics_port = free_port()
    server, port = prometheus(work, metrics_port)
    try:
        demo = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "worker.tools.cli", "demo", "--no-shift",
             "--new-item-every", str(args.new_item_every),
             "--duration-s", str(args.duration_s), "--metrics-port", str(metrics_port),
             "--history-out", str(work / "history.jsonl")],
            capture_output=True, text=True, check=False)
        window = f"{int(args.duration_s) + 120}s"
        seen = query(port, f"max_over_time(ALERTS[{window}])")
        scraped = query(port, f"count(max_over_time(freshrec_up[{window}]))")
    finally:
        server.stop()
    out = demo.stdout
    summary = json.loads(out[out.index("summary: ") + 9: out.index("\nheadline:")])
    alerts = sorted({"{alertname}({alertstate})".format(**r["metric"])  # type: ignore[arg-type]
                     for r in seen})
    firing = [a for a in alerts if a.endswith("(firing)")]
    drift = summary["drift_alerts"]["first_alert_s"]
    ok = demo.returncode == 0 and not firing and not drift and bool(scraped)
    figures = {
        "ok": ok, "seconds": args.duration_s, "demo_exit": demo.returncode,
        "cycles": summary["cycles"], "requests": summary["requests"],
        "drift_alerts": drift, "prometheus_alerts": alerts,
        "prometheus_scraped": bool(scraped)}
    print("quiet: " + json.dumps({**figures, "workdir": str(work)}))
    emit("bench.quiet", args, figures, {"alerts_firing": target(len(firing) + len(drift),
                                                                "<=", 0)})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
