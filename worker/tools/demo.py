"""``freshrec demo``: embedded broker + Redis + worker + serving + simulator, live view.

The simulator is an app: it asks ``freshrec serve`` (a child process on the embedded Redis)
for every slate over HTTP and sends the events back through Kafka, so the closed loop runs
through every part a production deployment has.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from consumers.kafka_source import KafkaEventProducer
from worker.config import Settings, load_settings
from worker.runtime.app import App, build_app
from worker.serving.client import HttpRankClient
from worker.tools.embedded import EmbeddedStack, ManagedProcess, free_port
from worker.tools.simulate import SimConfig, Simulator
from worker.tools.traffic import Pace, drive

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger(__name__)


class DemoOptions:
    """How long and how hard the demo runs."""

    def __init__(self, duration_s: float = 180.0, rate: float = 120.0,
                 shift_at_s: float | None = 90.0, seed: int = 7, history_out: str | None = None,
                 workdir: str | None = None, view_every_s: float = 5.0,
                 prewarm_requests: int = 8000, drift_settle_samples: int = 4000,
                 new_item_every: int = 25) -> None:
        self.duration_s, self.rate, self.shift_at_s = duration_s, rate, shift_at_s
        self.seed, self.history_out, self.workdir = seed, history_out, workdir
        self.view_every_s = view_every_s
        self.prewarm_requests = prewarm_requests
        self.drift_settle_samples = drift_settle_samples
        self.new_item_every = new_item_every


def run_demo(config_file: str | None, overrides: dict[str, Any], opts: DemoOptions,
             out: TextIO) -> dict[str, Any]:
    """Run the closed loop until the duration passes or Ctrl-C; return the summary."""
    with EmbeddedStack(opts.workdir) as stack:
        workdir = Path(stack.workdir)
        embedded = {
            # The simulator clicks within a second of the impression, so a short attribution
            # window gives negatives in seconds instead of the production default's 30 min.
            "ingest": {"join_window_s": 5.0, **overrides.get("ingest", {})},
            # A 30 s CTR view.
            "experiment": {"ctr_window_s": 30.0, **overrides.get("experiment", {})},
            # Short cycles on a small machine: the loop stays responsive to the shift.
            "training": {"max_steps_per_cycle": 40, **overrides.get("training", {})},
            "kafka": {"bootstrap_servers": stack.bootstrap},
            "redis": {"url": stack.redis_url},
            "store": {"checkpoint_dir": str(workdir / "checkpoints")},
        }
        settings = load_settings(config_file, _merge(overrides, embedded))
        app = build_app(settings)
        if settings.metrics.port:
            app.metrics.serve(settings.metrics.host, settings.metrics.port)
            print(f"metrics on http://{settings.metrics.host}:{settings.metrics.port}/metrics",
                  file=out)
        serve, serve_url = _start_serve(settings, workdir)
        _print_commands(stack, settings.redis.prefix, serve_url, opts, out)
        sim_cfg = replace(SimConfig(seed=opts.seed), shift_at_request=None,
                          prewarm_requests=opts.prewarm_requests,
                          new_item_every=opts.new_item_every)
        producer = KafkaEventProducer(settings.kafka.client_options())
        client = HttpRankClient(serve_url, token=settings.serve.token())
        sim = Simulator(sim_cfg, list(settings.experiment.arms), client, producer.emit,
                        (settings.kafka.events_topic, settings.kafka.items_topic),
                        settings.experiment.salt)
        sim.publish_catalog()
        sim.prewarm()
        producer.flush()
        stop = threading.Event()
        # Ctrl-C sets a flag the loop reads between iterations: an exception raised in the
        # middle of a Kafka call could leave the client unable to commit on the way out.
        interrupted = threading.Event()
        previous = _on_sigint(interrupted)
        # Start at a quarter of the target and climb while the worker keeps up: on a
        # loaded machine the worker finds its own sustainable rate instead of falling behind.
        pace = Pace(opts.rate, start=opts.rate / 4)
        sim_thread = threading.Thread(target=drive, daemon=True, name="simulator",
                                      args=(sim, pace, producer.flush),
                                      kwargs={"stop": stop})
        history = open(opts.history_out, "w") if opts.history_out else None  # noqa: SIM115
        start = last_view = time.monotonic()
        alerts = _AlertLog()
        consumed_since_view = consumed = 0
        # The pre-warm backlog (an app's history, served at random) is a transient the
        # drift detectors must not take for their reference: hold them until it is drained,
        # then give them a budget of samples (not cycles), so a slow machine waits as long
        # in traffic as a fast one.
        app.drift.settle_for(None)
        drained = False
        sim_thread.start()
        try:
            while time.monotonic() - start < opts.duration_s and not interrupted.is_set():
                got = app.worker.run_once().messages
                consumed_since_view += got
                consumed += got
                now = time.monotonic()
                if opts.shift_at_s is not None and now - start >= opts.shift_at_s:
                    sim.shift_requested = True  # by time: the rate adapts to the machine
                if now - last_view >= opts.view_every_s:
                    snap = _snapshot(app, sim, now - start,
                                     consumed_since_view / (now - last_view), alerts)
                    sent = (sum(sim.impressions.values()) + sum(sim.clicks.values())
                            + sum(sim.purchases.values()))
                    per_request = sent / sim.requests if sim.requests else 6.0
                    lag_requests = int(snap["lag"] / max(per_request, 1.0))
                    pace.adapt(lag_requests, now - last_view)
                    if not drained and lag_requests < pace.rate * opts.view_every_s:
                        drained = True  # the pre-warm backlog is worked off
                        app.drift.settle_for(opts.drift_settle_samples)
                    snap["request_rate"] = round(pace.rate, 1)
                    consumed_since_view, last_view = 0, now
                    print(_line(snap), file=out, flush=True)
                    if history:
                        history.write(json.dumps(snap) + "\n")
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main loop
            interrupted.set()
        finally:
            if interrupted.is_set():
                print("\ninterrupted: stopping cleanly", file=out, flush=True)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            stop.set()
            sim_thread.join(10)
            app.worker.checkpoint()
            elapsed = time.monotonic() - start
            summary = _snapshot(app, sim, elapsed, consumed / max(elapsed, 1e-9), alerts)
            summary["drift_alerts"] = alerts.summary()
            summary["headline"] = _headline(summary, settings.experiment.control)
            if history:
                history.close()
            app.close()
            producer.close()
            serve.stop()
        print("summary: " + json.dumps(summary, indent=2), file=out)
        print(summary["headline"], file=out)
        return summary


def _on_sigint(flag: threading.Event) -> Any:
    """Make SIGINT set ``flag``; returns the handler it replaced (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda *_: flag.set())


def _start_serve(settings: Settings, workdir: Path) -> tuple[ManagedProcess, str]:
    """``freshrec serve`` on the demo's Redis with the demo's experiment; ready = /readyz."""
    port = free_port()
    exp = settings.experiment
    arms = json.dumps([a.model_dump() for a in exp.arms])
    argv = [sys.executable, "-m", "worker.tools.cli", "serve", "--redis-url",
            settings.redis.url, "--port", str(port), "--set",
            f"redis.prefix={settings.redis.prefix}", "--set", f"experiment.arms={arms}",
            "--set", f"experiment.control={exp.control}", "--set", f"experiment.salt={exp.salt}"]
    proc = ManagedProcess("serve", argv, port, workdir / "serve.log")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            return False

    proc.start(90, ready)
    return proc, url


def _print_commands(stack: EmbeddedStack, prefix: str, serve_url: str, opts: DemoOptions,
                    out: TextIO) -> None:
    """The embedded Redis, broker and service, and commands for a second terminal."""
    exe = shutil.which("freshrec") or str(Path(sys.executable).parent / "freshrec")
    redis = f"--redis-url {stack.redis_url} --set redis.prefix={prefix}"
    print(f"Kafka {stack.bootstrap}  Redis {stack.redis_url}  serving {serve_url}"
          "  (while the demo runs)\n"
          f"  curl '{serve_url}/v1/arms/fresh/vectors?ids=item-000001&ids=item-000002'\n"
          f"  curl -d '{{\"user_id\": \"user-00042\", \"candidates\": [\"item-000001\", "
          f"\"item-000002\", \"item-000003\"], \"k\": 2}}' {serve_url}/v1/rank\n"
          f"  {exe} status {redis}\n"
          f"  {exe} lookup {redis} --arm fresh item-000001 item-000002\n"
          f"  {exe} rollback {redis} --arm fresh      # then: --release\n"
          + (f"  {exe} report --history {opts.history_out} --out report/   # after the demo\n"
             if opts.history_out else ""), file=out, flush=True)


def _headline(summary: dict[str, Any], control: str) -> str:
    """One line: each treatment's lift over control, its interval and p-values."""
    parts = []
    for name, arm in summary["arms"].items():
        if name == control or arm.get("lift") is None:
            continue
        parts.append(f"{name} vs {control}: lift {arm['lift']:+.1%} "
                     f"[{arm['lift_low']:+.1%}, {arm['lift_high']:+.1%}], "
                     f"p={_fmt_p(arm['p_value'])}, sequential p={_fmt_p(arm['sequential_p'])}")
    drift = summary["drift_alerts"]
    first = ", ".join(f"{k} at {v:.0f} s" for k, v in drift["first_alert_s"].items())
    early = drift["alerts_before_shift"]
    return ("headline: " + ("; ".join(parts) or "no treatment statistics yet")
            + f"; drift alerts: {first or 'none'}"
            + (f" (before the shift: {', '.join(early)})" if early else ""))


class _AlertLog:
    """When each drift alert first rose, relative to the simulated preference shift."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.before_shift: set[str] = set()

    def update(self, t: float, shifted: bool, alerts: dict[str, bool]) -> None:
        for name, up in alerts.items():
            if up and name not in self.first:
                self.first[name] = t
            if up and not shifted:
                self.before_shift.add(name)

    def summary(self) -> dict[str, Any]:
        return {"first_alert_s": self.first, "alerts_before_shift": sorted(self.before_shift)}


def _snapshot(app: App, sim: Simulator, elapsed: float, rate: float,
              alerts: _AlertLog) -> dict[str, Any]:
    lag = sum(app.pipeline.source.lag().values())
    exp = app.worker.refresh_statistics() or {"arms": {}, "srm_p_value": None}
    drift = app.drift.alerts()
    alerts.update(elapsed, sim.world.shifted, drift)
    arms = {}
    for name, lin in app.trainer.lineages.items():
        rep = app.trainer.last_reports.get(name)
        s = exp["arms"].get(name, {})
        arms[name] = {
            "version": lin.published, "lineage": lin.kind,
            "auc": None if rep is None or rep.progressive_auc != rep.progressive_auc
            else round(rep.progressive_auc, 4),
            "impressions": s.get("impressions"), "clicks": s.get("clicks"),
            "ctr": _round(s.get("ctr")), "ctr_window": _round(s.get("ctr_window")),
            "lift": _round(s.get("lift")), "lift_low": _round(s.get("lift_low")),
            "lift_high": _round(s.get("lift_high")), "p_value": s.get("p_value"),
            "sequential_p": s.get("sequential_p"),
        }
    return {"t_s": round(elapsed, 1), "events_per_s": round(rate, 1), "lag": lag,
            "cycles": app.trainer.cycles, "requests": sim.requests,
            "requests_unserved": sim.unserved,
            "shifted": sim.world.shifted, "new_item_clicks": sim.new_item_clicks,
            "samples_buffered": len(app.pipeline.buffers), "srm_p_value": exp["srm_p_value"],
            "drift": {k: bool(v) for k, v in drift.items()},
            "drift_scores": _drift_scores(app), "drift_thresholds": _drift_thresholds(app),
            "arms": arms}


def _drift_thresholds(app: App) -> dict[str, float]:
    """Where each drift score alerts (label CTR also needs p < label_p_value)."""
    cfg = app.settings.drift
    return {"score_psi": cfg.psi_threshold, "loss_adwin": 1.0,
            "label_ctr": cfg.label_min_change,
            "embedding_moved_share": cfg.embedding_alert_share}


def _drift_scores(app: App) -> dict[str, float]:
    d = app.drift
    out = {"score_psi": d.score_psi.score, "loss_adwin": d.loss.score,
           "label_ctr": d.label.score}
    for arm, (_shift, moved) in d.embedding.items():
        out[f"embedding_moved_share:{arm}"] = moved
    return {k: round(v, 4) for k, v in out.items()}


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or x != x else round(x, nd)


def _line(s: dict[str, Any]) -> str:
    arms = "  ".join(
        f"{n}[v{(a['version'] or '-').rsplit('-', 1)[-1].lstrip('0') or '0'} auc={a['auc']} "
        f"ctr={a['ctr_window']}" + (f" lift={a['lift']} p={_fmt_p(a['p_value'])}"
                                    f" seq_p={_fmt_p(a['sequential_p'])}"
                                    if a.get("p_value") is not None else "") + "]"
        for n, a in s["arms"].items())
    drift = ",".join(k for k, v in s["drift"].items() if v) or "-"
    return (f"t={s['t_s']:>6}s req/s={s.get('request_rate', '-'):>5} "
            f"ev/s={s['events_per_s']:>7} lag={s['lag']:>5} "
            f"cycles={s['cycles']:>4} {'SHIFTED ' if s['shifted'] else ''}drift={drift} {arms}")


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, val in b.items():
        out[key] = _merge(out.get(key, {}), val) if isinstance(val, dict) else val
    return out
