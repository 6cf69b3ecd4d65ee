"""The whole platform on one machine: what `make dev` / `browserfleet up` runs, and what e2e tests start.

Order: NATS and PostgreSQL (embedded unless NATS_URL / DATABASE_URL are given), migrations of every
service, the JetStream streams, every service as its own process with prefixed log lines, the first
organization and admin, then one worker. `stop()` (or Ctrl-C in the CLI) stops all of it cleanly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import httpx
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import BootstrapReply, BootstrapRequest

from .embedded import EmbeddedNats, EmbeddedPostgres, free_port

log = logging.getLogger(__name__)

DB_SERVICES = ("auth", "scheduler", "vault", "webhooks", "worker-gateway")
SERVICES = (*DB_SERVICES, "gateway")
# One subject per NATS service, served by the part it starts last (the scheduler's lean responders come
# up after its broker). A `{}` body is answered with a validation error by all but JWKS, a read, so a
# probe writes nothing; any answer at all means the service is subscribed.
READY_PROBES = {
    "auth": subjects.Auth.JWKS,
    "scheduler": subjects.Scheduler.CREATE_TASK,
    "vault": subjects.Vault.LIST_CREDENTIALS,
    "webhooks": subjects.Webhooks.LIST_ENDPOINTS,
    "worker-gateway": subjects.Workers.AUTHENTICATE,
}
DATABASE_NAME = "browserfleet"
T = TypeVar("T")
_COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")


def module_of(service: str) -> str:
    return "browserfleet_" + service.replace("-", "_")


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int | None
    reader: threading.Thread | None = None


@dataclass
class Platform:
    """Start with `with Platform(home) as p:` or `start()` / `stop()`.

    `home` holds everything that must survive a restart (database files, JetStream store, the vault
    master key file of the dev stack, the worker's key). `output` receives every prefixed log line.
    """

    home: Path
    nats_url: str | None = None
    database_url: str | None = None
    gateway_port: int | None = None
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    output: Callable[[str], None] | None = None
    color: bool = False

    gateway_url: str = field(init=False, default="")
    bootstrap: BootstrapReply | None = field(init=False, default=None)
    processes: list[ServiceProcess] = field(init=False, default_factory=list)
    _nats: EmbeddedNats | None = field(init=False, default=None)
    _pg: EmbeddedPostgres | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, *, ready_timeout: float = 120.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            self._start_infra()
            self._migrate()
            asyncio.run(self._prepare_nats())
            for service in SERVICES:
                self._spawn(service)
            self._wait_ready(ready_timeout)
            asyncio.run(self._wait_services(ready_timeout))
            self.bootstrap = asyncio.run(self._bootstrap())
            for index in range(self.workers):
                self._spawn("worker", suffix=str(index + 1) if self.workers > 1 else "")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # workers first (they finish or hand back their tasks), the gateway next, then the services
        for sp in reversed(self.processes):
            if sp.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    sp.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for sp in reversed(self.processes):
            try:
                sp.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                sp.proc.kill()
                sp.proc.wait()
        for sp in self.processes:
            if sp.reader:
                sp.reader.join(timeout=2)
        self.processes.clear()
        if self._pg:
            self._pg.stop()
            self._pg = None
        if self._nats:
            self._nats.stop()
            self._nats = None

    def __enter__(self) -> Platform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- steps -------------------------------------------------------------------------------
    def _start_infra(self) -> None:
        if not self.nats_url:
            self._nats = EmbeddedNats(self.home / "nats")
            self.nats_url = self._nats.start()
            self._emit("platform", f"NATS (embedded) on {self.nats_url}, data in {self.home / 'nats'}")
        if not self.database_url:
            self._pg = EmbeddedPostgres(self.home / "postgres")
            server = self._pg.start()
            self.database_url = _ensure_database(server, DATABASE_NAME)
            self._emit(
                "platform",
                f"PostgreSQL (embedded) on 127.0.0.1:{self._pg.port}, data in {self.home / 'postgres'}",
            )

    def _migrate(self) -> None:
        from . import migrations

        assert self.database_url
        for service in DB_SERVICES:
            migrations.upgrade(module_of(service), self.database_url)
        self._emit("platform", f"migrations applied: {', '.join(DB_SERVICES)}")

    async def _prepare_nats(self) -> None:
        from .messaging import connect, ensure_pool_consumers, ensure_streams

        assert self.nats_url
        nc = await connect(self.nats_url, name="browserfleet-up")
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            await ensure_pool_consumers(js)
        finally:
            await nc.close()

    def _vault_master_key(self) -> str:
        if "VAULT_MASTER_KEY" in self.env:
            return self.env["VAULT_MASTER_KEY"]
        if os.environ.get("VAULT_MASTER_KEY"):
            return os.environ["VAULT_MASTER_KEY"]
        # Dev stack only: the key lives in its own folder, apart from the database files it protects.
        path = self.home / "keys" / "vault-master.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(os.urandom(32)).decode())
        return path.read_text().strip()

    def _service_env(self, service: str) -> dict[str, str]:
        assert self.nats_url and self.database_url
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "NATS_URL"))}
        env.update(
            NATS_URL=self.nats_url,
            DATABASE_URL=self.database_url,
            SERVICE_NAME=service,
            PYTHONUNBUFFERED="1",
            LOG_LEVEL=env.get("LOG_LEVEL", "INFO"),
        )
        if service == "vault":
            env["VAULT_MASTER_KEY"] = self._vault_master_key()
        if service == "webhooks":
            # the dev stack's receivers are on this machine; production keeps the SSRF guard on
            env.setdefault("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        if service == "worker":  # the dev stack's pages (the gateway's /docs, test sites) are on this machine
            env.setdefault("BROWSER_ALLOW_NETWORKS", "127.0.0.1/32,::1/128")
        if service == "gateway":
            if not self.gateway_port:
                self.gateway_port = free_port(_remembered_port(self.home, "gateway"))
            env.update(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(self.gateway_port))
            self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
            _remember_port(self.home, "gateway", self.gateway_port)
        env.update(self.env)
        return env

    def _spawn(self, service: str, suffix: str = "") -> None:
        env = self._service_env(service)
        metrics_port: int | None = None
        if service != "gateway":
            metrics_port = free_port()
            env["METRICS_PORT"] = str(metrics_port)
        label = service + (f"-{suffix}" if suffix else "")
        if service == "worker":
            state = self.home / "workers" / label
            state.mkdir(parents=True, exist_ok=True)
            env["WORKER_STATE_DIR"] = str(state)
            env.setdefault("WORKER_NAME", f"{os.uname().nodename}-{label}")
            if not (state / "worker.json").exists():
                env["WORKER_INVITE_CODE"] = asyncio.run(self._platform_invite())
        proc = subprocess.Popen(
            [sys.executable, "-m", module_of(service), "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
        )
        sp = ServiceProcess(label, proc, metrics_port)
        assert proc.stdout is not None
        sp.reader = threading.Thread(target=self._pump, args=(label, proc.stdout), daemon=True)
        sp.reader.start()
        self.processes.append(sp)

    async def _platform_invite(self) -> str:
        from browserfleet_contracts.workers import CreateInviteRequest, InvitePublic

        from .messaging import RpcClient, connect

        assert self.nats_url
        nc = await connect(self.nats_url, name="browserfleet-up")
        try:
            rpc = RpcClient(nc, timeout=10)
            invite: InvitePublic = await _retry(
                lambda: rpc.call(subjects.Workers.CREATE_INVITE, CreateInviteRequest(), InvitePublic)
            )
            return invite.code
        finally:
            await nc.close()

    async def _bootstrap(self) -> BootstrapReply:
        from .messaging import RpcClient, connect

        assert self.nats_url
        nc = await connect(self.nats_url, name="browserfleet-up")
        try:
            rpc = RpcClient(nc, timeout=15)
            return await _retry(lambda: rpc.call(subjects.Auth.BOOTSTRAP, BootstrapRequest(), BootstrapReply))
        finally:
            await nc.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for sp in self.processes:
                if sp.proc.poll() is not None:
                    raise RuntimeError(f"{sp.name} exited with code {sp.proc.returncode} during startup")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.gateway_url}/health/ready", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            time.sleep(0.25)
        raise TimeoutError(f"gateway not ready after {timeout}s: {last}")

    async def _wait_services(self, timeout: float) -> None:
        """The gateway's readiness covers auth only; callers of `start()` may go straight to any service
        (tests create tasks through the scheduler), so each must answer before `start()` returns."""
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        from .messaging import connect

        assert self.nats_url
        nc = await connect(self.nats_url, name="browserfleet-up")
        deadline = time.monotonic() + timeout
        try:
            waiting = dict(READY_PROBES)
            while waiting:
                for sp in self.processes:
                    if sp.proc.poll() is not None:
                        raise RuntimeError(f"{sp.name} exited with code {sp.proc.returncode} during startup")
                for service, subject in list(waiting.items()):
                    with contextlib.suppress(NoRespondersError, NatsTimeout):
                        await nc.request(subject, b"{}", timeout=2)
                        del waiting[service]
                if waiting:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not answering after {timeout}s: {', '.join(sorted(waiting))}")
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    # --- output ------------------------------------------------------------------------------
    def _pump(self, label: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._emit(label, raw.decode(errors="replace").rstrip("\n"))

    def _emit(self, label: str, line: str) -> None:
        width = 16
        if self.color:
            color = _COLORS[hash(label) % len(_COLORS)]
            text = f"\x1b[{color}m{label:>{width}} |\x1b[0m {line}"
        else:
            text = f"{label:>{width}} | {line}"
        with self._lock:
            if self.output:
                self.output(text)
            else:
                print(text, flush=True)

    def alive(self) -> Iterator[ServiceProcess]:
        return (sp for sp in self.processes if sp.proc.poll() is None)


async def _retry(call: Callable[[], Awaitable[T]], *, attempts: int = 60, delay: float = 0.5) -> T:
    """Services come up in parallel; the first requests may find no responder yet."""
    from .errors import Unavailable

    for attempt in range(attempts):
        try:
            return await call()
        except Unavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _ensure_database(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


def _remembered_port(home: Path, name: str) -> int | None:
    import json

    with contextlib.suppress(OSError, ValueError):
        value = json.loads((home / "ports.json").read_text()).get(name)
        return int(value) if value else None
    return None


def _remember_port(home: Path, name: str, port: int) -> None:
    import json

    path = home / "ports.json"
    data: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
    data[name] = port
    path.write_text(json.dumps(data))
