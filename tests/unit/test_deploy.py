"""The compose file starts itself: health checks everywhere, starts gated on health."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from worker.tools.cli import _parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies():
    services = compose()["services"]
    assert {"kafka", "redis", "worker", "serve", "simulate", "prometheus", "grafana"} <= set(
        services)
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}: {cond}"


def test_freshrec_commands_in_the_compose_file_parse():
    parser = _parser()
    for name, svc in compose()["services"].items():
        if svc.get("build"):
            cmd = svc["command"]
            args = parser.parse_args(cmd if isinstance(cmd, list) else shlex.split(cmd))
            assert args.command in {"run", "serve", "simulate"}, name
    env = compose()["services"]["serve"]["environment"]
    assert env["FRESHREC_REDIS__URL"].startswith("redis://redis:")


def test_prometheus_scrapes_the_worker_and_the_service():
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in cfg["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert {"worker:9108", "serve:8080"} <= targets
