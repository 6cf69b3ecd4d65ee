"""The manifests start (issue 13, item 1): for docker-compose.yml and for k8s/base, every service's command and
environment read from the manifest itself (`launch.py` says what changes on the way out of a container: test
secrets, the test's addresses and free ports, a scratch directory) is started as a process on this machine
against the test run's PostgreSQL and a NATS configured the way the manifest configures it (Compose: its own
`nats-config` command and `nats` flags; Kubernetes: `busauth render` from the Secret's values, k8s/README.md),
after the one-shots the manifest runs first (Compose: nats-config, migrate-*, bootstrap; Kubernetes: the Jobs
and each Deployment's init containers), and must pass its own readiness probe.

Then the platform so started answers as one: the gateway's /health/ready has every service's own report, and
the first admin that the manifest's `bootstrap` created signs in (auth, over the bus as the gateway does); a
second bootstrap changes nothing. The last tests show the start-up check failing for what it exists to catch:
a command that is not installed, a wrong module path, a missing package, a setting the service rejects, a
probe path that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import yaml
from browserfleet_auth.bootstrap import settings_from
from browserfleet_contracts import bus, endpoints
from browserfleet_contracts.auth import LoginCommand, TokenPair
from browserfleet_core import busauth
from browserfleet_core.messaging import BusCredentials, RpcClient, connect
from browserfleet_devkit.embedded import nats_server_binary
from browserfleet_devkit.natscluster import NatsCluster
from browserfleet_devkit.processes import stop_process
from browserfleet_devkit.testing import Infra

from .launch import (
    LOOPBACK,
    URL,
    Host,
    Probe,
    Process,
    Spec,
    StartFailure,
    assign_ports,
    compose_spec,
    free_port,
    k8s_env,
    k8s_probe,
    localize,
    run_all,
    run_once,
    running,
    wait_ready,
)
from .test_k8s_nats import local_template, nats_conf

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
QUEUES = {"auth", "scheduler", "vault", "webhooks", "worker-gateway"}  # what the gateway's health asks
SEED_FIELDS = {"status", "timestamp", "uptime", "version"}


# --- test values for the secrets ------------------------------------------------------------------------------
def b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Values:
    """One manifest's secrets, as an operator would make them (deploy/env.example and secret.example.yaml
    say how), and its database."""

    database_url: str
    bus: dict[str, str]  # NATS_PASSWORD_<USER>, BUS_CALLOUT_SEED
    invite: str
    admin_password: str


def make_values(database_url: str) -> Values:
    return Values(
        database_url=database_url,
        bus=busauth.new_secrets(),
        invite="inv_" + secrets.token_urlsafe(32),
        admin_password=secrets.token_urlsafe(18),
    )


def dotenv(values: Values) -> dict[str, str]:
    """`.env` from deploy/env.example: every CHANGE_ME gets a test value (one without a generator fails),
    the rest stays the example's; the database names are the test database's."""
    url = urlsplit(values.database_url)
    generated = {
        **values.bus,
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or secrets.token_hex(12),
        "POSTGRES_DB": url.path.lstrip("/"),
        "VAULT_MASTER_KEY": b64key(),
        "WEBHOOK_MASTER_KEY": b64key(),
        "WORKER_POOL_INVITE": values.invite,
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(8),
        "BOOTSTRAP_ADMIN_PASSWORD": values.admin_password,
    }
    env: dict[str, str] = {}
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if key in generated:
            env[key] = generated[key]
        else:
            assert value != "CHANGE_ME", f"deploy/env.example: {key} has no test value"
            env[key] = value
    return env


def secret_values(values: Values) -> dict[str, str]:
    """browserfleet-secrets from k8s/base/secret.example.yaml, each CHANGE_ME a test value."""
    template = yaml.safe_load((ROOT / "k8s" / "base" / "secret.example.yaml").read_text())["stringData"]
    out: dict[str, str] = {}
    for key, example in template.items():
        if key.startswith("database-url-"):
            out[key] = values.database_url
        elif key.startswith("nats-password-"):
            out[key] = values.bus[
                "NATS_PASSWORD_" + key.removeprefix("nats-password-").upper().replace("-", "_")
            ]
        elif key == "bus-callout-seed":
            out[key] = values.bus["BUS_CALLOUT_SEED"]
        elif key in ("vault-master-key", "webhook-master-key"):
            out[key] = b64key()
        elif key == "worker-pool-invite":
            out[key] = values.invite
        elif key == "bootstrap-admin-password":
            out[key] = values.admin_password
        else:
            assert str(example) != "CHANGE_ME", f"secret.example.yaml: {key} has no test value"
            out[key] = str(example)
    return out


# --- the test run's servers -------------------------------------------------------------------------------------
class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def collector() -> Iterator[str]:
    """Stands in for the OpenTelemetry Collector (a third-party image the manifests run beside the platform):
    accepts every OTLP/HTTP post on 127.0.0.1 and drops it, so the services' exporter runs as deployed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def databases(infra: Infra) -> Iterator[dict[str, str]]:
    """One database per manifest on the test run's PostgreSQL (each runs its own migrations)."""
    made = {kind: f"bf_manifest_{kind}_{secrets.token_hex(4)}" for kind in ("compose", "k8s")}
    server = infra.database_url.rpartition("/")[0]
    with psycopg.connect(infra.database_url, autocommit=True) as conn:
        for name in made.values():
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {kind: f"{server}/{name}" for kind, name in made.items()}
    finally:
        with psycopg.connect(infra.database_url, autocommit=True) as conn:
            for name in made.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_address(database_url: str) -> str:
    url = urlsplit(database_url)
    return f"{url.hostname}:{url.port}"


def start_nats(argv: list[str], monitor: int, scratch: Path) -> subprocess.Popen[bytes]:
    log = (scratch / "logs" / "nats.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    # Compose's own healthcheck for it: /healthz?js-enabled-only=true on the monitoring port
    for _ in range(200):
        if proc.poll() is not None:
            raise StartFailure(f"nats exited with code {proc.returncode}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", timeout=2).status_code
                == 200
            ):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise StartFailure("nats did not become healthy")


def stop_nats(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, 10)


@dataclass
class Started:
    kind: str
    values: Values
    host: Host
    nats_url: str
    processes: list[Process]
    bootstrap: Spec

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)


# --- Compose ----------------------------------------------------------------------------------------------------
def compose_file() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def ordered_by_dependencies(compose: dict[str, Any], names: list[str]) -> list[list[str]]:
    """Waves of services: each starts once those it depends on in the wave before are ready, as Compose's
    `condition: service_healthy` makes it wait."""
    services = compose["services"]
    left, waves = list(names), []
    done: set[str] = set()
    while left:
        wave = [n for n in left if set(services[n].get("depends_on") or {}) & set(names) <= done]
        assert wave, f"docker-compose.yml: a dependency cycle among {left}"
        waves.append(wave)
        done |= set(wave)
        left = [n for n in left if n not in done]
    return waves


@pytest.fixture(scope="module")
def compose_started(
    databases: dict[str, str], collector: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Started]:
    compose = compose_file()
    values = make_values(databases["compose"])
    env = dotenv(values)
    scratch = tmp_path_factory.mktemp("compose")
    nats_port, monitor = free_port(), free_port()
    host = Host(
        scratch,
        {
            ("nats", 4222): f"127.0.0.1:{nats_port}",
            ("postgres", 5432): pg_address(values.database_url),
            ("otel-collector", 4318): collector,
        },
    )
    # the bus: nats-config renders the server's configuration into the volume NATS reads it from
    config = compose_spec(compose, "nats-config", env)
    config.env["NATS_LISTEN"] = f"127.0.0.1:{nats_port}"
    run_once(config, host)
    flags = [str(a) for a in compose["services"]["nats"]["command"]]
    flags[flags.index("-m") + 1] = str(monitor)
    nats = localize(Spec("nats", [nats_server_binary(), *flags], {}), host)
    nats_proc = start_nats(nats.argv, monitor, scratch)
    try:
        migrations = [n for n in compose["services"] if n.startswith("migrate-")]
        run_all([compose_spec(compose, name, env) for name in migrations], host)
        bootstrap = compose_spec(compose, "bootstrap", env)
        run_once(bootstrap, host)
        specs = {name: compose_spec(compose, name, env) for name in SERVICES}
        assign_ports(host, list(specs.values()))
        for name, ports in host.ports.items():  # a container reaches another by its service name
            host.hosts |= {(name, inside): f"127.0.0.1:{outside}" for inside, outside in ports.items()}
        processes: list[Process] = []
        with contextlib.ExitStack() as stack:
            for wave in ordered_by_dependencies(compose, SERVICES):
                batch = [localize(specs[name], host) for name in wave]
                processes += stack.enter_context(running(batch))
                wait_ready(batch)
            yield Started("compose", values, host, f"nats://127.0.0.1:{nats_port}", processes, bootstrap)
    finally:
        stop_nats(nats_proc)


# --- Kubernetes -----------------------------------------------------------------------------------------------
def k8s_objects() -> list[dict[str, Any]]:
    base = ROOT / "k8s" / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for rel in kustomization["resources"]:
        objects += [d for d in yaml.safe_load_all((base / rel).read_text()) if isinstance(d, dict)]
    return objects


def container_spec(
    name: str, container: dict[str, Any], config: dict[str, str], secret: dict[str, str]
) -> Spec:
    probe: Probe | None = k8s_probe(container) if "readinessProbe" in container else None
    return Spec(
        name=name, command=list(container["command"]), env=k8s_env(container, config, secret), probe=probe
    )


def service_addresses(objects: list[dict[str, Any]], host: Host) -> dict[tuple[str, int], str]:
    """Each Service's name and port, as a pod reaches it: the port its target container port got."""
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    found: dict[tuple[str, int], str] = {}
    for svc in (o for o in objects if o["kind"] == "Service"):
        name = svc["metadata"]["name"]
        pod = deployments[name]["spec"]["template"]["spec"]
        named = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            inside = int(named[target] if isinstance(target, str) else target)
            if inside in host.ports.get(name, {}):
                found[(name, int(port["port"]))] = f"127.0.0.1:{host.ports[name][inside]}"
    return found


@pytest.fixture(scope="module")
def k8s_started(
    databases: dict[str, str], collector: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Started]:
    objects = k8s_objects()
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
    config = {k: str(v) for k, v in configmap["data"].items()}
    values = make_values(databases["k8s"])
    secret = secret_values(values)
    scratch = tmp_path_factory.mktemp("k8s")
    # NATS as k8s/nats runs it (the base's STREAM_REPLICAS=3 needs three servers): its ConfigMap's nats.conf
    # on three local servers, including the accounts `busauth render --auth-only` makes from the Secret's values
    bus_env = {
        "NATS_PASSWORD_" + k.removeprefix("nats-password-").upper().replace("-", "_"): v
        for k, v in secret.items()
        if k.startswith("nats-password-")
    }
    bus_env["BUS_CALLOUT_SEED"] = secret["bus-callout-seed"]
    render = [
        "python",
        "-m",
        "browserfleet_core.busauth",
        "render",
        "--auth-only",
        "--out",
        "/nats/auth/auth.conf",
    ]
    run_once(Spec("nats-auth", render, bus_env), Host(scratch))
    cluster = NatsCluster(scratch / "nats", name="browserfleet", template=local_template(nats_conf()))
    nats_host = urlsplit(config["NATS_URL"])
    otel = urlsplit(config["OTEL_ENDPOINT"])
    with cluster:
        nats_address = cluster.url(0).removeprefix("nats://")
        host = Host(
            scratch,
            {
                (str(nats_host.hostname), int(nats_host.port or 4222)): nats_address,
                (str(otel.hostname), int(otel.port or 4318)): collector,
            },
        )
        jobs = {}
        for job in (o for o in objects if o["kind"] == "Job"):
            (container,) = job["spec"]["template"]["spec"]["containers"]
            jobs[job["metadata"]["name"]] = container_spec(job["metadata"]["name"], container, config, secret)
        assert "bootstrap" in jobs, "k8s/base has no bootstrap Job"
        run_all(list(jobs.values()), host)  # all at once, as applied: bootstrap migrates auth's schema itself
        deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
        assert set(deployments) == set(SERVICES)
        specs: dict[str, Spec] = {}
        inits: list[Spec] = []
        for name, dep in sorted(deployments.items()):
            pod = dep["spec"]["template"]["spec"]
            inits += [
                container_spec(f"{name}/{c['name']}", c, config, secret)
                for c in pod.get("initContainers", [])
            ]
            (main,) = [c for c in pod["containers"] if c["name"] == name]
            specs[name] = container_spec(name, main, config, secret)
        run_all(inits, host)  # each pod's init containers (one per pod here), every pod at once
        assign_ports(host, list(specs.values()))
        host.hosts |= service_addresses(objects, host)
        mains = [localize(spec, host) for spec in specs.values()]
        # Kubernetes starts every pod at once, in no order: so do we
        with running(mains):
            wait_ready(mains)
            yield Started("k8s", values, host, f"nats://{nats_address}", mains, jobs["bootstrap"])


# --- what a started platform answers ---------------------------------------------------------------------------
def login(started: Started) -> TokenPair:
    """As the gateway signs a user in: svc.auth.login over the bus, with the gateway's own bus identity."""

    async def go() -> TokenPair:
        password = started.values.bus["NATS_PASSWORD_GATEWAY"]
        creds = BusCredentials(user="gateway", password=password, inbox_prefix=bus.inbox_prefix("gateway"))
        nc = await connect(started.nats_url, name="manifest-test", credentials=creds)
        try:
            env = started.bootstrap.env  # the admin the manifest's bootstrap made: its email, its password
            request = LoginCommand(
                email=env["BOOTSTRAP_ADMIN_EMAIL"], password=env["BOOTSTRAP_ADMIN_PASSWORD"]
            )
            reply = await RpcClient(nc, timeout=10).call(endpoints.Auth.LOGIN, request)
        finally:
            await nc.close()
        assert isinstance(reply.root, TokenPair), reply  # no second factor asked of a new admin
        return reply.root

    return asyncio.run(go())


def check_platform(started: Started) -> None:
    gateway = started.process("gateway")
    assert gateway.spec.probe is not None
    ready = httpx.get(gateway.url("/health/ready", gateway.spec.probe.port), timeout=10)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert set(body) >= SEED_FIELDS and body["status"] in ("healthy", "degraded"), body
    # every service answered the gateway with its own report, and none is unhealthy
    assert set(body["services"]) == QUEUES, body["checks"]
    for name, report in body["services"].items():
        assert report["status"] in ("healthy", "degraded"), (name, report)
        assert report["checks"]["nats"]["status"] == "healthy", (name, report)
        assert report["checks"]["database"]["status"] == "healthy", (name, report)
    for process in started.processes:
        assert process.spec.probe is not None, f"{process.name} has no readiness probe"
        own = httpx.get(process.url(process.spec.probe.path, process.spec.probe.port), timeout=10).json()
        assert set(own) >= SEED_FIELDS, (process.name, own)
    # the first admin, made by the manifest's bootstrap from the Secret / .env, signs in
    tokens = login(started)
    assert tokens.access_token and tokens.token_type == "bearer"
    again = run_once(started.bootstrap, started.host)
    assert "already done" in again and "nothing changed" in again, again


# start-up is bounded by READY_CAP_SECONDS per wave; the test's own bound covers a loaded machine
@pytest.mark.timeout(900)
def test_compose_starts_and_every_service_is_ready(compose_started: Started) -> None:
    check_platform(compose_started)


@pytest.mark.timeout(900)
def test_kubernetes_base_starts_and_every_service_is_ready(k8s_started: Started) -> None:
    check_platform(k8s_started)


# --- and it fails for what it exists to catch -----------------------------------------------------------------
def gateway_spec(nats_url: str) -> Spec:
    """The Compose gateway, aimed at an open NATS (it needs nothing else to answer its probes)."""
    spec = compose_spec(compose_file(), "gateway", dotenv(make_values("postgresql://u@127.0.0.1:1/db")))
    spec.env["NATS_URL"] = nats_url
    spec.env.pop("NATS_USER", None)
    spec.env.pop("NATS_PASSWORD", None)
    return spec


def alone(spec: Spec, tmp: Path) -> Host:
    """Nothing else of the platform runs: every other container it names is a closed port."""
    closed = f"127.0.0.1:{free_port()}"
    named = {
        (m["host"], int(m["port"]))
        for v in spec.env.values()
        for m in URL.finditer(v)
        if m["host"] not in LOOPBACK
    }
    return Host(tmp, dict.fromkeys(named, closed))


def must_not_start(spec: Spec, tmp: Path, match: str) -> None:
    host = alone(spec, tmp)
    with pytest.raises(StartFailure, match=match):
        start_and_wait(spec, host)


def start_and_wait(spec: Spec, host: Host) -> None:
    process = localize(spec, host)
    with running([process]):
        wait_ready([process])


def test_a_command_that_is_not_installed_fails(nats_url: str, tmp_path: Path) -> None:
    spec = gateway_spec(nats_url)
    spec.command = ["browserfleet-gatewayy", "run"]
    must_not_start(spec, tmp_path, "not installed")


def test_a_wrong_module_path_fails(nats_url: str, tmp_path: Path) -> None:
    spec = gateway_spec(nats_url)
    spec.command = ["python", "-m", "browserfleet_gateway.mian", "run"]
    must_not_start(spec, tmp_path, "(?s)exited with code 1.*No module named browserfleet_gateway.mian")


def test_a_missing_package_fails(nats_url: str, tmp_path: Path) -> None:
    """OTEL_EXPORTER=otlp (what both manifests set) without the OTLP exporter installed: the issue's bug."""
    # a regular package ahead on the path wins over the installed namespace package: as if uninstalled
    hidden = tmp_path / "hide" / "opentelemetry" / "exporter" / "otlp"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        'raise ModuleNotFoundError(f"No module named {__name__!r} (not installed)", name=__name__)\n'
    )
    spec = gateway_spec(nats_url)
    assert spec.env["OTEL_EXPORTER"] == "otlp"
    spec.env["PYTHONPATH"] = str(tmp_path / "hide")
    must_not_start(spec, tmp_path, "(?s)exited with code 1.*needs opentelemetry-exporter-otlp")


def test_a_setting_the_service_rejects_fails(nats_url: str, tmp_path: Path) -> None:
    spec = gateway_spec(nats_url)
    spec.env["LOG_FORMAT"] = "yaml"
    must_not_start(spec, tmp_path, "(?s)exited with code 1.*log_format")


def test_a_health_budget_past_its_bound_fails(nats_url: str, tmp_path: Path) -> None:
    """The gateway's readiness budget has the bound every service's has (a probe that waits a minute per
    dependency would outlast any orchestrator's probe timeout)."""
    spec = gateway_spec(nats_url)
    spec.env["HEALTH_TIMEOUT_SECONDS"] = "60"
    must_not_start(spec, tmp_path, "(?s)exited with code 1.*health_timeout_seconds")


def test_a_probe_path_that_does_not_exist_fails(nats_url: str, tmp_path: Path) -> None:
    spec = gateway_spec(nats_url)
    assert spec.probe is not None
    spec.probe = Probe(path="/healthz", port=spec.probe.port)
    must_not_start(spec, tmp_path, "/healthz does not exist")


def test_bootstrap_refuses_a_placeholder_password() -> None:
    """Checked before anything is touched (in-process: the bootstrap one-shots above run the command itself)."""
    spec = compose_spec(compose_file(), "bootstrap", dotenv(make_values("postgresql://u@127.0.0.1:1/db")))
    spec.env["BOOTSTRAP_ADMIN_PASSWORD"] = "CHANGE_ME"
    with pytest.raises(SystemExit, match="BOOTSTRAP_ADMIN_PASSWORD: must be at least 12 characters"):
        settings_from(spec.env)
