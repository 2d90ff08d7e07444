"""``freshrec demo``: embedded broker + Redis + worker + simulator, with a live view."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from consumers.kafka_source import KafkaEventProducer
from worker.app import build_app, vector_store
from worker.config import load_settings
from worker.embedded import EmbeddedStack
from worker.serving import Ranker
from worker.simulate import SimConfig, Simulator

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger(__name__)


class DemoOptions:
    """How long and how hard the demo runs."""

    def __init__(self, duration_s: float = 150.0, rate: float = 120.0,
                 shift_at_s: float | None = 60.0, seed: int = 7, history_out: str | None = None,
                 workdir: str | None = None, view_every_s: float = 5.0) -> None:
        self.duration_s, self.rate, self.shift_at_s = duration_s, rate, shift_at_s
        self.seed, self.history_out, self.workdir = seed, history_out, workdir
        self.view_every_s = view_every_s


def _simulate(sim: Simulator, producer: KafkaEventProducer, rate: float, stop: threading.Event,
              shift_at_request: int | None) -> None:
    start, n = time.monotonic(), 0
    while not stop.is_set():
        if shift_at_request is not None and n == shift_at_request:
            log.info("simulator: preference shift now (request %d)", n)
        sim.step()
        n += 1
        ahead = n / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        if n % 500 == 0:
            producer.flush()
    producer.flush()


def run_demo(config_file: str | None, overrides: dict[str, Any], opts: DemoOptions,
             out: TextIO) -> dict[str, Any]:
    """Run the closed loop until the duration passes or Ctrl-C; return the summary."""
    with EmbeddedStack(opts.workdir) as stack:
        workdir = Path(stack.workdir)
        embedded = {
            # The simulator clicks within a second of the impression, so a short attribution
            # window gives negatives in seconds instead of the production default's 30 min.
            "ingest": {"join_window_s": 5.0, **overrides.get("ingest", {})},
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
        shift_req = int(opts.shift_at_s * opts.rate) if opts.shift_at_s is not None else None
        sim_cfg = replace(SimConfig(seed=opts.seed), shift_at_request=shift_req)
        producer = KafkaEventProducer(settings.kafka.client_options())
        sim = Simulator(sim_cfg, list(settings.experiment.arms), Ranker(vector_store(settings)),
                        producer.emit, (settings.kafka.events_topic, settings.kafka.items_topic),
                        settings.experiment.salt)
        sim.publish_catalog()
        producer.flush()
        stop = threading.Event()
        sim_thread = threading.Thread(target=_simulate, daemon=True, name="simulator",
                                      args=(sim, producer, opts.rate, stop, shift_req))
        history = open(opts.history_out, "w") if opts.history_out else None  # noqa: SIM115
        start = last_view = time.monotonic()
        consumed_at_view = 0.0
        sim_thread.start()
        try:
            while time.monotonic() - start < opts.duration_s:
                app.worker.run_once()
                now = time.monotonic()
                if now - last_view >= opts.view_every_s:
                    consumed = _consumed(app)
                    snap = _snapshot(app, sim, now - start, (consumed - consumed_at_view)
                                     / (now - last_view))
                    consumed_at_view, last_view = consumed, now
                    print(_line(snap), file=out, flush=True)
                    if history:
                        history.write(json.dumps(snap) + "\n")
        except KeyboardInterrupt:
            print("\ninterrupted: stopping cleanly", file=out)
        finally:
            stop.set()
            sim_thread.join(10)
            app.worker.checkpoint()
            summary = _snapshot(app, sim, time.monotonic() - start, 0.0)
            if history:
                history.close()
            app.close()
            producer.close()
        print("summary: " + json.dumps(summary, indent=2), file=out)
        return summary


def _consumed(app: Any) -> float:
    total = 0.0
    for metric in app.metrics.events_consumed.collect():
        total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def _snapshot(app: Any, sim: Simulator, elapsed: float, rate: float) -> dict[str, Any]:
    lag = sum(app.pipeline.source.lag().values())
    arms = {}
    for name, lin in app.trainer.lineages.items():
        rep = app.trainer.last_reports.get(name)
        arms[name] = {
            "version": lin.published, "lineage": lin.kind,
            "auc": None if rep is None or rep.progressive_auc != rep.progressive_auc
            else round(rep.progressive_auc, 4),
            "impressions": sim.impressions[name], "clicks": sim.clicks[name],
            "ctr": round(sim.clicks[name] / sim.impressions[name], 4)
            if sim.impressions[name] else None,
        }
    return {"t_s": round(elapsed, 1), "events_per_s": round(rate, 1), "lag": lag,
            "cycles": app.trainer.cycles, "requests": sim.requests,
            "shifted": sim.world.shifted, "new_item_clicks": sim.new_item_clicks,
            "samples_buffered": len(app.pipeline.buffers), "arms": arms}


def _line(s: dict[str, Any]) -> str:
    arms = "  ".join(f"{n}[v{(a['version'] or '-').rsplit('-', 1)[-1].lstrip('0') or '0'} "
                     f"auc={a['auc']} ctr={a['ctr']}]" for n, a in s["arms"].items())
    return (f"t={s['t_s']:>6}s ev/s={s['events_per_s']:>7} lag={s['lag']:>5} "
            f"cycles={s['cycles']:>4} {'SHIFTED ' if s['shifted'] else ''}{arms}")


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, val in b.items():
        out[key] = _merge(out.get(key, {}), val) if isinstance(val, dict) else val
    return out
