"""Offline checks of the deployment artefacts: docker-compose.yml, deploy/** and k8s/**.

There is no Docker engine or cluster here, so these tests read the files as data and hold them to
the rules in deploy/README.md and k8s/README.md. When `kubectl` is on PATH, the kustomizations are
also rendered (`kubectl kustomize`, no cluster needed) and the rendered objects checked the same way.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browserfleet_contracts import bus, subjects

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAYS = {name: K8S / "overlays" / name for name in ("dev", "prod")}

SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
# services owning a Postgres schema (DESIGN.md §1): each needs `browserfleet-<name> migrate` first
DB_SERVICES = {"auth", "scheduler", "vault", "webhooks", "worker-gateway"}
PLACEHOLDER = re.compile(r"^(|CHANGE_ME|\d{1,3})$")
SECRET_ENV = {
    "VAULT_MASTER_KEY",
    "WEBHOOK_MASTER_KEY",
    "DATABASE_URL",
    "WORKER_KEY",
    "WORKER_INVITE_CODE",
    "PLATFORM_POOL_INVITE",
    "NATS_PASSWORD",
    "NATS_SYSTEM_PASSWORD",
    "BUS_CALLOUT_SEED",
}


def yaml_files() -> list[Path]:
    files = [COMPOSE]
    for folder in (DEPLOY, K8S):
        files += sorted(p for p in folder.rglob("*") if p.suffix in {".yml", ".yaml"})
    return files


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects(folder: Path) -> list[dict[str, Any]]:
    """Every Kubernetes object declared in the YAML files of `folder` (kustomizations excluded)."""
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects += [doc for doc in load_all(path) if isinstance(doc, dict) and "kind" in doc]
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return k8s_objects(BASE)


# --- every file parses ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"


def test_the_tree_has_what_the_readmes_promise() -> None:
    for rel in (
        "deploy/README.md",
        "deploy/env.example",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/rules.yml",
        "deploy/otel/collector.yaml",
        "deploy/grafana/dashboards/browserfleet-overview.json",
        "k8s/README.md",
        "k8s/base/kustomization.yaml",
        "k8s/overlays/dev/kustomization.yaml",
        "k8s/overlays/prod/kustomization.yaml",
    ):
        assert (ROOT / rel).is_file(), rel


# --- docker compose ---------------------------------------------------------------------------------


def image_build(name: str) -> dict[str, Any]:
    """The root Dockerfile builds every image: the target adds what the service needs (the dashboard, Chromium)."""
    target = name if name in ("gateway", "worker") else "service"
    return {"context": ".", "target": target, "args": {"SERVICE": name}}


def test_the_dockerfile_has_every_target_and_each_service_a_workspace_package() -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert {"build", "service", "gateway", "worker"} <= set(stages), stages
    for name in SERVICES:
        project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())["project"]
        assert project["name"] == f"browserfleet-{name}", (
            name
        )  # the build's `--package browserfleet-$SERVICE`
        assert f"browserfleet-{name}" in project["scripts"], name  # the image's default command
    assert not list(ROOT.glob("services/*/Dockerfile")), "one Dockerfile at the root builds every image"


def test_compose_builds_and_runs_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert SERVICES, "no services found under services/"
    for name in SERVICES:
        assert name in services, f"docker-compose.yml has no `{name}` service"
        svc = services[name]
        assert svc["build"] == image_build(name), name
        assert svc["image"].startswith(f"browserfleet/{name}:"), name
        assert svc["command"] == [f"browserfleet-{name}", "run"], name
        env = svc["environment"]
        assert env["NATS_URL"] == "nats://nats:4222", name
        assert env["LOG_FORMAT"] == "json", name
        assert env["OTEL_EXPORTER"] == "otlp", name
        if name != "gateway":
            assert env["METRICS_PORT"] == "9000", name
            # the default 127.0.0.1 would hide /metrics from the Prometheus container
            assert env["METRICS_HOST"] == "0.0.0.0", name
        # the gateway keeps no database (GET /health/db asks the services that do), nor does a worker
        assert ("DATABASE_URL" in env) == (name not in {"worker", "gateway"}), name
        # readiness as Kubernetes asks it: the service's /health/ready (tests/deploy/test_startup.py runs it)
        probe = " ".join(svc["healthcheck"]["test"])
        assert "/health/ready" in probe and (":8080/" if name == "gateway" else ":9000/") in probe, name


def test_compose_migrates_before_each_database_service_starts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in DB_SERVICES:
        migrate = services[f"migrate-{name}"]
        assert migrate["command"] == [f"browserfleet-{name}", "migrate"]
        assert migrate["restart"] == "no"
        assert migrate["build"] == image_build(name)
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        dep = services[name]["depends_on"][f"migrate-{name}"]
        assert dep["condition"] == "service_completed_successfully", name


def test_compose_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nats = services["nats"]
    assert nats["image"] == "nats:2.10-alpine"
    assert "-js" in nats["command"]
    assert any(v.endswith(":/data") for v in nats["volumes"])
    pg = services["postgres"]
    assert pg["image"] == "postgres:16"
    assert "healthcheck" in pg and pg["volumes"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["webhooks"]["environment"]["WEBHOOK_ALLOW_PRIVATE_TARGETS"] == "false"
    assert services["worker"]["environment"]["BROWSER_SANDBOX"] == "false"
    for mount, svc in (
        ("./deploy/prometheus/prometheus.yml", "prometheus"),
        ("./deploy/grafana/provisioning", "grafana"),
        ("./deploy/grafana/dashboards", "grafana"),
        ("./deploy/otel/collector.yaml", "otel-collector"),
    ):
        assert any(v.split(":")[0] == mount for v in services[svc]["volumes"]), (svc, mount)
        assert (ROOT / mount).exists(), mount


def test_compose_carries_no_secret_values(compose: dict[str, Any]) -> None:
    """Secrets reach containers only as ${...} from `.env`; none is written into the file."""
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if key in SECRET_ENV or "PASSWORD" in key:
                assert "${" in str(value), f"{name}.{key} must come from .env"
    vault_env = compose["services"]["vault"]["environment"]
    assert vault_env["VAULT_MASTER_KEY"].startswith("${VAULT_MASTER_KEY")
    assert compose["services"]["webhooks"]["environment"]["WEBHOOK_MASTER_KEY"].startswith(
        "${WEBHOOK_MASTER_KEY"
    )
    # least privilege: each master key reaches its own service's container and no other
    for name, svc in compose["services"].items():
        if name != "vault":
            assert "VAULT_MASTER_KEY" not in (svc.get("environment") or {}), name
        if name != "webhooks":
            assert "WEBHOOK_MASTER_KEY" not in (svc.get("environment") or {}), name


def test_compose_workers_register_one_identity_each(compose: dict[str, Any]) -> None:
    """No shared worker key and no shared state: every replica registers with the pool invite that
    worker-gateway keeps (the same value), and gets an identity of its own."""
    services = compose["services"]
    worker, gateway = services["worker"]["environment"], services["worker-gateway"]["environment"]
    assert "WORKER_KEY" not in worker and "WORKER_STATE_DIR" not in worker
    assert worker["WORKER_INVITE_CODE"].startswith("${WORKER_POOL_INVITE:?")
    assert gateway["PLATFORM_POOL_INVITE"] == worker["WORKER_INVITE_CODE"]
    assert not services["worker"].get("volumes"), "replicas share nothing"
    assert "worker-state" not in (compose.get("volumes") or {})


def test_env_example_documents_every_interpolated_secret(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "env.example").read_text()
    values = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#") and "=" in line
    )
    for key in (
        "POSTGRES_PASSWORD",
        "VAULT_MASTER_KEY",
        "WEBHOOK_MASTER_KEY",
        "WORKER_POOL_INVITE",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert key in values, key
        assert PLACEHOLDER.match(values[key]), f"{key} in env.example must stay a placeholder"
    assert "base64.b64encode(os.urandom(32))" in text
    raw = COMPOSE.read_text()
    for required in re.findall(r"\$\{(\w+):\?", raw):
        assert required in values, f"{required} is required by docker-compose.yml but not in env.example"


# --- Prometheus, Grafana, OpenTelemetry ---------------------------------------------------------------


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        assert name in jobs, f"prometheus.yml does not scrape {name}"
        targets = json.dumps(jobs[name])
        assert (f'"{name}"' in targets) and ("8080" if name == "gateway" else "9000") in targets, name
    assert "nats" in jobs
    assert config["rule_files"]


def test_alert_rules() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"] if "alert" in r}
    for required in ("TaskBacklogHigh", "WebhookDeliveriesFailing", "ServiceDown", "HighGatewayErrorRate"):
        assert required in alerts, required
        rule = alerts[required]
        assert rule["expr"].strip() and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), required
    assert "up == 0" in alerts["ServiceDown"]["expr"]
    assert 'stream_name="TASKS"' in alerts["TaskBacklogHigh"]["expr"]
    assert "5.." in alerts["HighGatewayErrorRate"]["expr"]


def test_grafana_dashboard_and_provisioning() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "browserfleet-overview.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 6
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "browserfleet_gateway_http_requests_total",
        "browserfleet_gateway_http_request_duration_seconds_bucket",
        "faststream_received_processed_messages_total",
        "browserfleet_webhook_delivery_attempts_total",
        "nats_jetstream_consumer_num_pending",
        'up{job="worker"}',
    ):
        assert metric in exprs, metric
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]

    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "browserfleet.yml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_browserfleet_metrics_in_dashboards_exist_in_the_code() -> None:
    """A renamed counter must not leave the dashboard and alerts silently empty."""
    text = (DEPLOY / "grafana" / "dashboards" / "browserfleet-overview.json").read_text()
    text += (DEPLOY / "prometheus" / "rules.yml").read_text()
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"\bbrowserfleet_[a-z_]+", text)}
    assert used, "the dashboard reads no browserfleet_* metric"
    source = "\n".join(p.read_text() for p in (ROOT / "services").glob("*/src/**/*.py"))
    source += "\n".join(p.read_text() for p in (ROOT / "libs" / "core" / "src").glob("**/*.py"))
    for metric in sorted(used):
        assert f'"{metric}"' in source, (
            f"{metric} is read by the dashboard/alerts but no service registers it"
        )


def test_otel_collector_pipeline() -> None:
    config = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert "batch" in traces["processors"]
    assert "debug" in traces["exporters"]
    for section in ("receivers", "processors", "exporters"):
        for component in traces[section]:
            assert component in config[section], f"{component} used but not defined"
    assert "# otlp:" in (DEPLOY / "otel" / "collector.yaml").read_text()


# --- Kubernetes -------------------------------------------------------------------------------------


def kustomization_paths(folder: Path) -> list[Path]:
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [folder / rel for rel in kust.get("resources", [])]


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS.values()], ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_resources_exist(folder: Path) -> None:
    paths = kustomization_paths(folder)
    assert paths
    for path in paths:
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{path} missing"
    if folder == BASE:
        listed = {p.name for p in paths}
        unlisted = {p.name for p in BASE.glob("*.yaml")} - listed - {"kustomization.yaml"}
        # only the Secret template stays out, so `apply -k` cannot overwrite the real Secret
        assert unlisted == {"secret.example.yaml"}, unlisted


def check_deployment(name: str, dep: dict[str, Any]) -> None:
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] != 0, name
    assert pod.get("automountServiceAccountToken") is False, name
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true", name
    main = pod["containers"][0]
    assert main["name"] == name
    assert main["command"] == [f"browserfleet-{name}", "run"], name
    port_names = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert str(port_names["http" if name == "gateway" else "metrics"]) == annotations["prometheus.io/port"], (
        name
    )
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in main, f"{name} has no {probe}"
        action = main[probe].get("httpGet") or main[probe].get("tcpSocket")
        assert action and action["port"] in port_names, f"{name} {probe} names an unknown port"
    # readiness: the service's health (503 only when unhealthy); liveness: the process answers, no dependency
    # asked, so a failing database never restarts every pod
    assert main["readinessProbe"]["httpGet"]["path"] == "/health/ready", name
    assert main["livenessProbe"]["httpGet"]["path"] == "/health/live", name
    for container in pod_containers(dep):
        cname = f"{name}/{container['name']}"
        assert re.fullmatch(rf"browserfleet/{name}(:[\w.-]+)?", container["image"]), cname
        res = container["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), cname
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, cname
        assert sc["runAsNonRoot"] is True, cname
        assert sc["readOnlyRootFilesystem"] is True, cname
        assert sc["capabilities"]["drop"] == ["ALL"], cname
        assert not sc["capabilities"].get("add"), cname
        for env in container.get("env", []):
            if env["name"] in SECRET_ENV:
                assert "secretKeyRef" in env.get("valueFrom", {}), (
                    f"{cname}: {env['name']} must come from a Secret"
                )
    mounted = {m["name"] for c in pod_containers(dep) for m in c.get("volumeMounts", [])}
    assert mounted <= {v["name"] for v in pod.get("volumes", [])}, name


def test_every_service_has_a_hardened_deployment(base: list[dict[str, Any]]) -> None:
    deployments = by_kind(base, "Deployment")
    assert set(deployments) == set(SERVICES)
    services = by_kind(base, "Service")
    pdbs = by_kind(base, "PodDisruptionBudget")
    for name, dep in deployments.items():
        check_deployment(name, dep)
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items(), name
        assert services[name]["spec"]["selector"] == selector, name
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selector, name
        init = [c["command"] for c in dep["spec"]["template"]["spec"].get("initContainers", [])]
        assert init == ([[f"browserfleet-{name}", "migrate"]] if name in DB_SERVICES else []), name


def test_migration_jobs(base: list[dict[str, Any]]) -> None:
    jobs = by_kind(base, "Job")
    assert set(jobs) == {f"migrate-{name}" for name in DB_SERVICES} | {"bootstrap"}
    for name in DB_SERVICES:
        pod = jobs[f"migrate-{name}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == [f"browserfleet-{name}", "migrate"]
        assert container["image"].startswith(f"browserfleet/{name}:")
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        (env,) = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
        assert env["valueFrom"]["secretKeyRef"]["key"] == f"database-url-{name}"


def test_config_map_holds_no_secrets_and_points_at_external_nats(base: list[dict[str, Any]]) -> None:
    (config,) = by_kind(base, "ConfigMap").values()
    data = config["data"]
    assert data["NATS_URL"].startswith("nats://") and "svc.cluster.local" in data["NATS_URL"]
    assert data["LOG_FORMAT"] == "json" and data["METRICS_HOST"] == "0.0.0.0"
    for key in data:
        assert key not in SECRET_ENV and not re.search(r"PASSWORD|SECRET|TOKEN|KEY$", key), key
    webhooks = by_kind(base, "Deployment")["webhooks"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "WEBHOOK_ALLOW_PRIVATE_TARGETS", "value": "false"} in webhooks["env"]


def test_no_secret_holds_a_real_value() -> None:
    secrets = [
        doc
        for path in K8S.rglob("*.yaml")
        for doc in load_all(path)
        if isinstance(doc, dict) and doc.get("kind") == "Secret"
    ]
    assert secrets, "the Secret template is missing"
    for secret in secrets:
        for key, value in (secret.get("stringData") or {}).items():
            assert PLACEHOLDER.match(str(value)), (
                f"Secret {secret['metadata']['name']}.{key} is not a placeholder"
            )
        for key, value in (secret.get("data") or {}).items():
            decoded = base64.b64decode(value).decode()
            assert PLACEHOLDER.match(decoded), (
                f"Secret {secret['metadata']['name']}.{key} is not a placeholder"
            )
    template = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    keys = set(template["stringData"])
    refs = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for obj in k8s_objects(BASE)
        if obj["kind"] in {"Deployment", "Job"}
        for container in obj["spec"]["template"]["spec"].get("initContainers", [])
        + obj["spec"]["template"]["spec"]["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert refs == keys, f"Secret template and references disagree: {refs ^ keys}"


def test_k8s_worker_pods_register_one_identity_each(base: list[dict[str, Any]]) -> None:
    """Every pod registers with the pool invite worker-gateway keeps (one Secret key for both): no shared
    worker key, no state volume."""
    deployments = by_kind(base, "Deployment")

    def env_of(name: str) -> dict[str, Any]:
        (container,) = [
            c for c in deployments[name]["spec"]["template"]["spec"]["containers"] if c["name"] == name
        ]
        return {e["name"]: e for e in container.get("env", [])}

    worker, gateway = env_of("worker"), env_of("worker-gateway")
    assert "WORKER_KEY" not in worker and "WORKER_STATE_DIR" not in worker
    invite = worker["WORKER_INVITE_CODE"]["valueFrom"]["secretKeyRef"]
    assert invite == gateway["PLATFORM_POOL_INVITE"]["valueFrom"]["secretKeyRef"]
    assert invite["key"] == "worker-pool-invite" and not invite.get("optional")
    volumes = {v["name"] for v in deployments["worker"]["spec"]["template"]["spec"]["volumes"]}
    assert "state" not in volumes


def test_keda_scales_the_worker_on_every_default_pool_consumer(base: list[dict[str, Any]]) -> None:
    (scaled,) = by_kind(base, "ScaledObject").values()
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == "worker" and target.get("kind", "Deployment") == "Deployment"
    assert "worker" in by_kind(base, "Deployment")
    assert "replicas" not in by_kind(base, "Deployment")["worker"]["spec"], "KEDA owns the worker count"
    consumers = set()
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert meta["account"] == bus.APP_ACCOUNT  # where the generated NATS config puts the platform
        assert meta["stream"] == subjects.TASKS_STREAM
        assert meta["natsServerMonitoringEndpoint"].endswith(":8222")
        assert int(meta["lagThreshold"]) > 0
        consumers.add(meta["consumer"])
    assert consumers == {subjects.task_run_consumer(subjects.DEFAULT_POOL, p) for p in subjects.PRIORITIES}


def test_gateway_hpa(base: list[dict[str, Any]]) -> None:
    hpa = by_kind(base, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert "replicas" not in by_kind(base, "Deployment")["gateway"]["spec"], "the HPA owns the gateway count"


def test_worker_network_policy(base: list[dict[str, Any]]) -> None:
    (policy,) = by_kind(base, "NetworkPolicy").values()
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "worker"}
    assert "Egress" in spec["policyTypes"]
    peers = [peer for rule in spec["egress"] for peer in rule["to"]]
    blocks = [p["ipBlock"] for p in peers if "ipBlock" in p]
    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"):
        assert private in v4["except"], private
    for block in blocks:
        assert block["cidr"] in {"0.0.0.0/0", "::/0"} and block["except"], block
    nats_rules = [
        rule
        for rule in spec["egress"]
        if any(
            p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "nats"
            for p in rule["to"]
        )
    ]
    assert nats_rules and nats_rules[0]["ports"] == [{"protocol": "TCP", "port": 4222}]
    # any other in-cluster peer would be a hole in the sandbox (DNS aside)
    selectors = [p for p in peers if "ipBlock" not in p]
    names = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in selectors}
    assert names == {"nats", "kube-system"}


def test_overlays_set_replicas_and_autoscaling() -> None:
    dev = yaml.safe_load((OVERLAYS["dev"] / "kustomization.yaml").read_text())
    assert {r["name"]: r["count"] for r in dev["replicas"]} == dict.fromkeys(SERVICES, 1)
    deleted = {
        yaml.safe_load(p["patch"])["kind"] for p in dev["patches"] if "$patch: delete" in p.get("patch", "")
    }
    assert deleted == {"HorizontalPodAutoscaler", "ScaledObject"}
    prod = yaml.safe_load((OVERLAYS["prod"] / "kustomization.yaml").read_text())
    assert {r["name"]: r["count"] for r in prod["replicas"]}["scheduler"] == 3
    strategic = [yaml.safe_load(p["patch"]) for p in prod["patches"] if "target" not in p]
    hpa = next(p for p in strategic if p["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3
    scaled = next(p for p in strategic if p["kind"] == "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] >= 1
    for overlay in (dev, prod):
        assert {i["name"] for i in overlay["images"]} == {f"browserfleet/{s}" for s in SERVICES}


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: the structural checks above still ran")
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlays_render(overlay: str) -> None:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(OVERLAYS[overlay])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    objects = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, dep in deployments.items():
        check_deployment(name, dep)
        assert dep["metadata"]["namespace"] == "browserfleet"
        assert dep["metadata"]["labels"]["app.kubernetes.io/part-of"] == "browserfleet"
    (config,) = by_kind(objects, "ConfigMap").values()
    if overlay == "dev":
        assert all(dep["spec"]["replicas"] == 1 for dep in deployments.values())
        assert not by_kind(objects, "ScaledObject") and not by_kind(objects, "HorizontalPodAutoscaler")
    else:
        assert config["data"]["LOG_FORMAT"] == "json"
        assert deployments["scheduler"]["spec"]["replicas"] == 3
        assert by_kind(objects, "HorizontalPodAutoscaler")["gateway"]["spec"]["minReplicas"] == 3
        assert by_kind(objects, "ScaledObject")["worker"]["spec"]["scaleTargetRef"]["name"] == "worker"
        for dep in deployments.values():
            for container in pod_containers(dep):
                assert not container["image"].endswith(":latest"), "prod pins image tags"


# --- the bus: one identity per service, the server configured from the contracts ------------------------


def test_every_service_joins_the_bus_as_itself(compose: dict[str, Any], base: list[dict[str, Any]]) -> None:
    """Compose and Kubernetes give each service its own NATS user and password (a worker's key is its
    credential), and worker-gateway the callout's signing key and its system-account password."""
    services = compose["services"]
    deployments = by_kind(base, "Deployment")
    for name in SERVICES:
        env = services[name]["environment"]
        k8s_env = {e["name"]: e for c in pod_containers(deployments[name]) if "env" in c for e in c["env"]}
        if name == "worker":
            assert "NATS_USER" not in env and "NATS_USER" not in k8s_env
            continue
        assert env["NATS_USER"] == name, name
        assert env["NATS_PASSWORD"] == "${NATS_PASSWORD_" + name.upper().replace("-", "_") + "}", name
        assert k8s_env["NATS_USER"]["value"] == name, name
        assert k8s_env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"nats-password-{name}", name
    gw = services["worker-gateway"]["environment"]
    assert gw["BUS_CALLOUT_SEED"] == "${BUS_CALLOUT_SEED}"
    assert gw["NATS_SYSTEM_PASSWORD"] == "${NATS_PASSWORD_WORKER_GATEWAY_SYS}"
    # NATS starts from the configuration rendered from the same .env, after it was written
    config = services["nats-config"]
    assert config["command"][:4] == ["python", "-m", "browserfleet_core.busauth", "render"]
    assert services["nats"]["command"][:2] == ["-c", "/config/nats.conf"]
    assert services["nats"]["depends_on"]["nats-config"]["condition"] == "service_completed_successfully"
