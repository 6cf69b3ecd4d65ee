"""k8s/nats: NATS as a 3-server JetStream cluster with every write fsynced before it is acknowledged.

Offline: the StatefulSet, its Services, PodDisruptionBudget and placement (one server per node, spread over
zones), the ConfigMap's nats.conf (routes to all three, sync_interval: always, the auth include landing on
the Secret's mount) and the platform's side (STREAM_REPLICAS=3, NATS_URL naming the client Service).

Live: the ConfigMap's nats.conf itself, with only its addresses and data folder changed, runs as three real
nats-server processes on 127.0.0.1 with the accounts rendered by `browserfleet_core.busauth` (as the Secret
`nats-auth` holds them); a service joins as itself, the platform's streams get three replicas, the servers
report sync "always", and with a server killed the cluster still acknowledges writes.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import nats
import pytest
import yaml
from browserfleet_contracts import bus, subjects
from browserfleet_core.busauth import ServerConfig, render
from browserfleet_core.settings import StreamSettings
from browserfleet_core.streams import ARTIFACTS_STREAM, ensure_streams
from browserfleet_devkit.busconfig import BusSecrets
from browserfleet_devkit.natscluster import NatsCluster
from nats.aio.client import Client as NatsClient

ROOT = Path(__file__).resolve().parents[2]
NATS_DIR = ROOT / "k8s" / "nats"


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((NATS_DIR / "nats.yaml").read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def nats_conf() -> str:
    return str(objects()[("ConfigMap", "nats-config")]["data"]["nats.conf"])


def block(conf: str, name: str) -> str:
    found = re.search(rf"^{name} \{{(.*?)^\}}", conf, re.S | re.M)
    assert found, f"nats.conf has no {name} block"
    return found.group(1)


def test_three_servers_one_per_node_spread_over_zones() -> None:
    found = objects()
    sts = found[("StatefulSet", "nats")]
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "nats"  # what the worker NetworkPolicy lets workers reach
    anti = pod["affinity"]["podAntiAffinity"]
    assert [t["topologyKey"] for t in anti["requiredDuringSchedulingIgnoredDuringExecution"]] == [
        "kubernetes.io/hostname"
    ]
    zones = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert zones == ["topology.kubernetes.io/zone"]
    assert found[("PodDisruptionBudget", "nats")]["spec"]["maxUnavailable"] == 1
    headless = found[("Service", "nats-headless")]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert sts["spec"]["serviceName"] == "nats-headless"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_the_configuration_routes_to_every_server_and_syncs_always() -> None:
    conf = nats_conf()
    sts = objects()[("StatefulSet", "nats")]
    js = block(conf, "jetstream")
    assert re.search(r"^\s*sync_interval: always\s*$", js, re.M)
    store = re.search(r"store_dir: (\S+)", js)
    assert store is not None
    mounts = {
        m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert PurePosixPath(store.group(1)).is_relative_to(mounts["data"])
    routes = re.findall(r"nats://(\S+):6222", block(conf, "cluster"))
    namespace = yaml.safe_load((NATS_DIR / "kustomization.yaml").read_text())["namespace"]
    service = sts["spec"]["serviceName"]
    assert routes == [
        f"nats-{i}.{service}.{namespace}.svc.cluster.local" for i in range(sts["spec"]["replicas"])
    ]
    # the include lands on the Secret's mount (paths are relative to the including file)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    config_file = PurePosixPath(container["args"][container["args"].index("-c") + 1])
    include = re.search(r"^include (\S+)$", conf, re.M)
    assert include is not None
    target = PurePosixPath(*_normalise(config_file.parent / include.group(1)))
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    auth_mount = next(m for m in container["volumeMounts"] if volumes[m["name"]].get("secret"))
    assert volumes[auth_mount["name"]]["secret"]["secretName"] == "nats-auth"
    assert target.parent == PurePosixPath(auth_mount["mountPath"]) and target.name == "auth.conf"
    config_mount = next(m for m in container["volumeMounts"] if volumes[m["name"]].get("configMap"))
    assert config_file.parent == PurePosixPath(config_mount["mountPath"])


def _normalise(path: PurePosixPath) -> list[str]:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return parts


def test_the_platform_keeps_three_copies_of_every_stream() -> None:
    config = yaml.safe_load((ROOT / "k8s" / "base" / "configmap.yaml").read_text())["data"]
    assert config["STREAM_REPLICAS"] == str(objects()[("StatefulSet", "nats")]["spec"]["replicas"])
    assert config["NATS_URL"] == "nats://nats.nats.svc.cluster.local:4222"
    settings = StreamSettings.model_validate(
        {k.lower(): v for k, v in config.items() if k.startswith("STREAM_")}
    )
    assert [settings.replicas(k) for k in ("tasks", "task_updates", "events", "artifacts")] == [3, 3, 3, 3]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_the_kustomization_builds() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(NATS_DIR)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d)
    assert kinds == ["ConfigMap", "Namespace", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]


# --- live: the ConfigMap's configuration as three real servers ------------------------------------------------
def local_template(conf: str) -> str:
    """nats.conf with its addresses, name and data folder made local (NatsCluster's placeholders); every other
    line, sync_interval and the include among them, as Kubernetes runs it."""
    text = conf.replace("{", "{{").replace("}", "}}")
    swaps = [
        (r"^server_name: \$POD_NAME$", 'server_name: "{name}"'),
        (r"^listen: 0\.0\.0\.0:4222$", 'listen: "{host}:{client_port}"'),
        (r"^http: 0\.0\.0\.0:8222$", 'http: "{host}:{monitor_port}"'),
        (r"^(\s*)store_dir: \S+$", r'\1store_dir: "{store_dir}"'),
        (r"^(\s*)listen: 0\.0\.0\.0:6222$", r'\1listen: "{host}:{cluster_port}"'),
        (r"^(\s*)routes: \[.*?\]$", r"\1routes: [{routes}]"),
    ]
    for pattern, replacement in swaps:
        text, count = re.subn(pattern, replacement, text, flags=re.M | re.S)
        assert count == 1, f"nats.conf: {pattern} matched {count} times"
    return text


@pytest.fixture(scope="module")
def secrets() -> BusSecrets:
    return BusSecrets.create()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, secrets: BusSecrets) -> Iterator[NatsCluster]:
    root = tmp_path_factory.mktemp("k8s-nats")
    # what `busauth render --auth-only` puts in the Secret nats-auth; the include reaches it from each
    # server's folder as it reaches /etc/nats/auth from /etc/nats/config
    (root / "auth").mkdir()
    auth = render(ServerConfig(passwords=secrets.passwords, issuer=secrets.issuer), auth_only=True)
    (root / "auth" / "auth.conf").write_text(auth)
    with NatsCluster(root, name="browserfleet", template=local_template(nats_conf())) as c:
        yield c


@pytest.fixture
async def scheduler(cluster: NatsCluster, secrets: BusSecrets) -> AsyncIterator[NatsClient]:
    creds = secrets.credentials(bus.SCHEDULER)
    nc = await nats.connect(servers=cluster.urls, name="scheduler", **creds.options(cluster.urls[0]))
    try:
        yield nc
    finally:
        await nc.close()


def monitor(cluster: NatsCluster, i: int, page: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.monitor_ports[i]}/{page}", timeout=5) as resp:
        found: dict[str, Any] = json.load(resp)
    return found


async def test_the_configuration_runs_as_a_cluster_with_r3_streams_synced_always(
    cluster: NatsCluster, scheduler: NatsClient
) -> None:
    js = scheduler.jetstream(timeout=10)
    await ensure_streams(js, settings=StreamSettings(stream_replicas=3))
    for name in (
        subjects.TASKS_STREAM,
        subjects.TASK_UPDATES_STREAM,
        subjects.EVENTS_STREAM,
        ARTIFACTS_STREAM,
    ):
        info = await js.stream_info(name)
        assert info.config.num_replicas == 3, name
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2, name
    for i in range(cluster.size):
        varz = await asyncio.to_thread(monitor, cluster, i, "varz")
        assert varz["jetstream"]["config"]["sync_always"] is True, varz["jetstream"]["config"]
        assert varz["cluster"]["name"] == "browserfleet"

    # one server gone (a node drained, a zone lost): two of three still acknowledge every write
    leader = (await js.stream_info(subjects.TASKS_STREAM)).cluster
    assert leader is not None and leader.leader is not None
    # (not the server this client is connected to: what is tested is the quorum, not the client's reconnect)
    here = scheduler.connected_url.port if scheduler.connected_url else None
    victim = next(
        i
        for i in range(cluster.size)
        if cluster.node_name(i) != leader.leader and cluster.client_ports[i] != here
    )
    cluster.stop_node(victim, kill=True)
    try:
        run = subjects.task_run(subjects.DEFAULT_POOL, "normal")
        ack = await js.publish(run, b"{}", stream=subjects.TASKS_STREAM)
        assert ack.stream == subjects.TASKS_STREAM and not ack.duplicate
    finally:
        cluster.start_node(victim)


async def test_a_service_joins_only_as_itself(cluster: NatsCluster, secrets: BusSecrets) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            servers=cluster.urls[:1],
            user=bus.SCHEDULER,
            password="not-its-password",
            allow_reconnect=False,
            connect_timeout=2,
        )
