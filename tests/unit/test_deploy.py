"""The compose file starts itself: health checks everywhere, starts gated on health."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from worker.config import load_settings
from worker.tools.cli import _parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies():
    services = compose()["services"]
    assert {"kafka", "redis", "ingest-1", "ingest-2", "trainer", "serve", "simulate",
            "prometheus", "grafana"} <= set(services)
    roles = [svc["command"][svc["command"].index("--role") + 1] for svc in services.values()
             if "--role" in (svc.get("command") or [])]
    assert sorted(roles) == ["ingest", "ingest", "train"]  # two ingest processes, a trainer
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
    assert {"ingest-1:9108", "ingest-2:9108", "trainer:9108", "serve:8080"} <= targets


def manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "freshrec.yaml").read_text()) if d]


def test_kubernetes_manifests_validate_against_the_api_schema_strictly():
    import kubernetes_validate

    docs = manifests()
    assert {d["kind"] for d in docs} >= {"ConfigMap", "StatefulSet", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
    broken = next(d for d in docs if d["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(broken))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does bite
        kubernetes_validate.validate(broken, "1.31.0", strict=True)


def test_kubernetes_workloads_probe_and_expose_what_freshrec_serves():
    parser = _parser()
    docs = manifests()
    env = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = load_settings(None, {})
    assert settings.redis.url == env["FRESHREC_REDIS__URL"]
    workloads = {d["metadata"]["name"]: d for d in docs
                 if d["kind"] in ("StatefulSet", "Deployment")}
    assert workloads["freshrec-trainer"]["kind"] == "StatefulSet"
    assert workloads["freshrec-trainer"]["spec"]["replicas"] == 1  # one publisher per arm
    assert workloads["freshrec-ingest"]["spec"]["replicas"] == 2  # scaled by replicas
    for name, role in (("freshrec-ingest", "ingest"), ("freshrec-trainer", "train")):
        (container,) = workloads[name]["spec"]["template"]["spec"]["containers"]
        assert parser.parse_args(container["args"]).role == role
    for name, doc in workloads.items():
        pod = doc["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        args = parser.parse_args(container["args"])
        port = args.metrics_port if args.command == "run" else args.port
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port), name
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path and ports[get["port"]] == port, (name, probe)
    for stateful in ("freshrec-ingest", "freshrec-trainer"):  # each pod: its own volume
        worker = workloads[stateful]
        (container,) = worker["spec"]["template"]["spec"]["containers"]
        ckpt = next(e["value"] for e in container["env"]
                    if e["name"] == "FRESHREC_STORE__CHECKPOINT_DIR")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {c["metadata"]["name"] for c in worker["spec"]["volumeClaimTemplates"]}
        assert any(ckpt.startswith(path) and name in claims for name, path in mounts.items())


def test_kubernetes_serve_reads_its_api_token_from_a_mounted_secret():
    serve = next(d for d in manifests() if d["metadata"]["name"] == "freshrec-serve"
                 and d["kind"] == "Deployment")
    pod = serve["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = next(e["value"] for e in container["env"]
                if e["name"] == "FRESHREC_SERVE__API_TOKEN_FILE")
    (mount,) = container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert path.startswith(mount["mountPath"] + "/") and mount["readOnly"]
    assert path.rsplit("/", 1)[1] == "token" and volume["secret"]["secretName"]
