"""The whole platform on one machine: what `make dev` / `browserfleet up` runs, and what e2e tests start.

Order: NATS and PostgreSQL (embedded unless NATS_URL / DATABASE_URL are given), migrations of every
service, the JetStream streams, every service as its own process with prefixed log lines, the first
organization and admin, then one worker; `start()` returns once the worker is ready to take tasks. `stop()`
(or Ctrl-C in the CLI) stops all of it cleanly. One platform per data folder (datadir.py); with
`supervise`, a crashed service, worker, NATS or PostgreSQL is restarted (supervisor.py).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
from browserfleet_contracts import bus, endpoints
from browserfleet_contracts.auth import BootstrapReply, BootstrapRequest

from .busconfig import BusSecrets
from .datadir import DataDirLock
from .embedded import EmbeddedNats, EmbeddedPostgres, describe_returncode, free_port, listens, port_is_free
from .gates import DB_SERVICES as DB_SERVICES
from .gates import MIGRATIONS, OWN_ENV, Gated, Prelaunch, launch, prelaunch
from .gates import SERVICES as SERVICES
from .gates import module_of as module_of
from .supervisor import CrashPolicy, Supervisor

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

log = logging.getLogger(__name__)

# One subject per NATS service, served by the part it starts last (the scheduler's lean responders come
# up after its broker). A `{}` body is answered with a validation error by all but JWKS, a read, so a
# probe writes nothing; any answer at all means the service is subscribed.
READY_PROBES = {
    "auth": endpoints.Auth.JWKS.subject,
    "scheduler": endpoints.Scheduler.CREATE_TASK.subject,
    "vault": endpoints.Vault.LIST_CREDENTIALS.subject,
    "webhooks": endpoints.Webhooks.LIST_ENDPOINTS.subject,
    "worker-gateway": endpoints.Workers.AUTHENTICATE.subject,
}
DATABASE_NAME = "browserfleet"
T = TypeVar("T")
_COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")


@dataclass
class ServiceProcess:
    """One service or worker process. A restart (the supervisor's) replaces `proc` in place, with the same
    environment, so the same ports and the same worker identity."""

    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int | None
    reader: threading.Thread | None = None
    env: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0  # time.time() of the latest (re)start
    # its last lines, for the error that says it died at start-up (the output callback may keep none)
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=15))
    relaunch: Callable[[ServiceProcess], None] | None = None

    # --- supervisor.Unit ---
    def alive(self) -> bool:
        return self.proc.poll() is None

    def describe_exit(self) -> str:
        return describe_returncode(self.proc.returncode)

    def restart(self) -> None:
        assert self.relaunch is not None
        self.relaunch(self)


@dataclass
class Platform:
    """Start with `with Platform(home) as p:` or `start()` / `stop()`.

    `home` holds everything that must survive a restart (database files, JetStream store, the vault
    master key file of the dev stack, the bus credentials, the worker's key). `output` receives every
    prefixed log line. The embedded NATS is the authenticated bus (busconfig.py): each service connects as
    itself, workers through worker-gateway's auth callout, and the launcher (and tests, `admin_url` /
    `connect_admin`) as `admin`. A NATS_URL given instead must know these identities (its configuration
    rendered by `python -m browserfleet_core.busauth render` from `<home>/keys/bus.json`'s values), or be an
    open server.
    """

    home: Path
    nats_url: str | None = None
    database_url: str | None = None
    gateway_port: int | None = None
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    output: Callable[[str], None] | None = None
    color: bool = False
    # runs as `admin` once the streams exist, before any service starts (e.g. a test's own pool consumers)
    prepare: Callable[[NatsClient], Awaitable[None]] | None = None
    # restart what crashes (make dev); tests that kill a process to see the rest cope leave it off
    supervise: bool = False
    crash_policy: CrashPolicy | None = None
    # the gateway port to try first when none is fixed and none is remembered (make dev: 8080)
    preferred_gateway_port: int | None = None
    # the processes `gates.prelaunch` started already, for these `workers` and `env` (else start() does)
    prelaunched: Prelaunch | None = None
    # the embedded NATS's HTTP monitoring port (127.0.0.1; the benchmark counts messages per task there)
    nats_monitor_port: int | None = None

    gateway_url: str = field(init=False, default="")
    bootstrap: BootstrapReply | None = field(init=False, default=None)
    processes: list[ServiceProcess] = field(init=False, default_factory=list)
    worker_names: list[str] = field(init=False, default_factory=list)
    secrets: BusSecrets | None = field(init=False, default=None)
    _nats: EmbeddedNats | None = field(init=False, default=None)
    _pg: EmbeddedPostgres | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    supervisor: Supervisor | None = field(init=False, default=None)
    ready_seconds: float | None = field(init=False, default=None)  # start() until a worker takes tasks
    _datadir: DataDirLock | None = field(init=False, default=None)
    _gateway_port_fixed: bool = field(init=False, default=False)
    _gates: Prelaunch | None = field(init=False, default=None)
    # worker-gateway's socket for remote workers, which the gateway proxies at /workers/ws
    worker_socket_port: int | None = field(init=False, default=None)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, *, ready_timeout: float = 120.0) -> None:
        began = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self._gateway_port_fixed = self.gateway_port is not None
        try:
            self._datadir = DataDirLock(self.home)
            self._datadir.acquire()
            self._prelaunch()
            self._start_infra()
            self._migrate()
            asyncio.run(self._prepare_nats())
            if self._gates is not None:
                self._gates.stop_launching()  # those not started yet start now, ungated
            for service in SERVICES:
                self._spawn(service)
            self._wait_ready(ready_timeout)
            asyncio.run(self._wait_services(ready_timeout))
            self.bootstrap = asyncio.run(self._bootstrap())
            for index in range(self.workers):
                self._spawn("worker", suffix=str(index + 1) if self.workers > 1 else "")
            workers = [
                sp for sp in self.processes if sp.name.startswith("worker") and sp.name != "worker-gateway"
            ]
            asyncio.run(self._wait_workers(workers, ready_timeout))
            self.ready_seconds = time.monotonic() - began
            self._datadir.announce(gateway_url=self.gateway_url)
            if self.supervise:
                self.supervisor = Supervisor(
                    self._supervised, lambda line: self._emit("platform", line), self.crash_policy
                )
                self.supervisor.start()
        except BaseException:
            self.stop()
            raise

    def _supervised(self) -> list[Any]:
        units: list[Any] = [u for u in (self._nats, self._pg) if u is not None]
        return units + list(self.processes)

    @property
    def embedded_nats(self) -> EmbeddedNats | None:
        return self._nats

    @property
    def embedded_postgres(self) -> EmbeddedPostgres | None:
        return self._pg

    def stop(self) -> None:
        if self.supervisor is not None:  # first: from here on an exit is not a crash
            self.supervisor.stop()
        if self._gates is not None:
            self._gates.close()
        # workers first, and waited for: they hand back their tasks and report themselves offline through
        # the scheduler and worker-gateway, which must still be up for that; then the gateway and the rest
        workers = [sp for sp in self.processes if sp.env.get("SERVICE_NAME") == "worker"]
        others = [sp for sp in reversed(self.processes) if sp not in workers]
        for group in (workers, others):
            for sp in group:
                if sp.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        sp.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for sp in group:
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
        if self._datadir is not None:
            self._datadir.release()
            self._datadir = None

    def __enter__(self) -> Platform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- steps -------------------------------------------------------------------------------
    def _prelaunch(self) -> None:
        """Every service and the first workers held at their gate (gates.py), importing beside initdb and the
        migrations: started here unless the caller started them sooner (`prelaunched`, browserfleet up)."""
        if self.prelaunched is not None:
            self._gates, self.prelaunched = self.prelaunched, None
            self._gates.attach(self._emit)
        else:
            self._gates = prelaunch(self.workers, self.env, self._emit)

    def _start_infra(self) -> None:
        self.secrets = BusSecrets.load_or_create(self.home / "keys")
        if not self.nats_url:
            self._nats = EmbeddedNats(
                self.home / "nats", secrets=self.secrets, monitor_port=self.nats_monitor_port
            )
            self.nats_url = self._nats.start()
            self._emit(
                "platform",
                f"NATS (embedded, authenticated) on {self.nats_url}, data in {self.home / 'nats'}",
            )
        if not self.database_url:
            self._pg = EmbeddedPostgres(self.home / "postgres")
            server = self._pg.start()
            self.database_url = _ensure_database(server, DATABASE_NAME)
            self._emit(
                "platform",
                f"PostgreSQL (embedded) on 127.0.0.1:{self._pg.port}, data in {self.home / 'postgres'}",
            )

    def _migrate(self) -> None:
        assert self.database_url
        gated = self._gates.take(MIGRATIONS, self._migrations_env()) if self._gates is not None else None
        if gated is not None:
            _wait_migrated(gated)
        else:
            from browserfleet_core import migrations

            for service in DB_SERVICES:
                migrations.upgrade(module_of(service), self.database_url)
        self._emit("platform", f"migrations applied: {', '.join(DB_SERVICES)}")

    def _migrations_env(self) -> dict[str, str]:
        assert self.database_url
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_ENV)}
        env.update(PYTHONUNBUFFERED="1", DATABASE_URL=self.database_url)
        env.update(self.env)
        return env

    # --- the bus as `admin` -------------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        """The NATS URL with the `admin` user's credentials: the privileged client of the dev stack and of
        tests (it may publish and subscribe anything, `>`)."""
        assert self.nats_url and self.secrets
        return self.secrets.url_as(bus.ADMIN, self.nats_url)

    async def connect_admin(self, name: str = "browserfleet-up") -> NatsClient:
        from browserfleet_core.messaging import connect

        assert self.nats_url and self.secrets
        return await connect(self.nats_url, name=name, credentials=self.secrets.credentials(bus.ADMIN))

    async def _prepare_nats(self) -> None:
        from browserfleet_core.streams import ensure_pool_consumers, ensure_streams

        nc = await self.connect_admin()
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            if self.prepare is not None:
                await self.prepare(nc)
            await ensure_pool_consumers(js)
        finally:
            await nc.close()

    def _master_key(self, variable: str, filename: str) -> str:
        """A service's master key: the caller's (env) or, dev stack only, one kept in its own folder apart from
        the database files it protects (made on first start)."""
        if variable in self.env:
            return self.env[variable]
        if os.environ.get(variable):
            return os.environ[variable]
        path = self.home / "keys" / filename
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(os.urandom(32)).decode())
        return path.read_text().strip()

    def _vault_master_key(self) -> str:
        return self._master_key("VAULT_MASTER_KEY", "vault-master.key")

    def _service_env(self, service: str) -> dict[str, str]:
        assert self.nats_url and self.database_url
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_ENV)}
        env.update(
            NATS_URL=self.nats_url,
            DATABASE_URL=self.database_url,
            SERVICE_NAME=service,
            PYTHONUNBUFFERED="1",
            LOG_LEVEL=env.get("LOG_LEVEL", "INFO"),
        )
        assert self.secrets
        env.update(self.secrets.service_env(service))
        if service == "vault":
            env["VAULT_MASTER_KEY"] = self._vault_master_key()
        if service == "webhooks":
            # seals the webhook signing secrets at rest
            env["WEBHOOK_MASTER_KEY"] = self._master_key("WEBHOOK_MASTER_KEY", "webhooks-master.key")
            # the dev stack's receivers are on this machine; production keeps the SSRF guard on
            env.setdefault("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        if service == "worker":  # the dev stack's pages (the gateway's /docs, test sites) are on this machine
            env.setdefault("BROWSER_ALLOW_NETWORKS", "127.0.0.1/32,::1/128")
        if service in ("worker-gateway", "gateway"):  # remote workers (docs/websocket.md "Remote workers")
            self.worker_socket_port = self.worker_socket_port or free_port()
            if service == "worker-gateway":
                env.update(WORKER_SOCKET_HOST="127.0.0.1", WORKER_SOCKET_PORT=str(self.worker_socket_port))
            else:
                env["WORKER_GATEWAY_WS_URL"] = f"ws://127.0.0.1:{self.worker_socket_port}/workers/ws"
        if service == "gateway":
            if not self.gateway_port:
                self.gateway_port = free_port(
                    _remembered_port(self.home, "gateway") or self.preferred_gateway_port
                )
            env.update(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(self.gateway_port))
            self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
            _remember_port(self.home, "gateway", self.gateway_port)
        env.update(self.env)
        return env

    def add_worker(self, invite_code: str, label: str) -> str:
        """Starts one more worker that joins with `invite_code`, as a machine an admin invited would (a new
        state folder, so it registers with the code). Returns the name it registers under."""
        self._spawn("worker", suffix=label, invite_code=invite_code)
        return self.worker_names[-1]

    def _spawn(self, service: str, suffix: str = "", invite_code: str | None = None) -> None:
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
            self.worker_names.append(env["WORKER_NAME"])
            if invite_code is not None:
                env["WORKER_INVITE_CODE"] = invite_code
            elif not (state / "worker.json").exists():
                env["WORKER_INVITE_CODE"] = asyncio.run(self._platform_invite())
        gated = self._gates.take(label, env) if self._gates is not None else None
        if gated is not None:
            sp = ServiceProcess(
                label, gated.proc, metrics_port, gated.reader, env, tail=gated.tail, relaunch=self._relaunch
            )
            sp.started_at = time.time()
        else:
            sp = ServiceProcess(
                label, self._popen(service, env), metrics_port, env=env, relaunch=self._relaunch
            )
            self._read_output(sp)
        self.processes.append(sp)

    def _popen(self, service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return launch(service, env)

    def _read_output(self, sp: ServiceProcess) -> None:
        sp.started_at = time.time()
        assert sp.proc.stdout is not None
        sp.reader = threading.Thread(target=self._pump, args=(sp.name, sp.proc.stdout, sp.tail), daemon=True)
        sp.reader.start()

    def _relaunch(self, sp: ServiceProcess) -> None:
        """The supervisor's restart: the same command and environment (ports, identity, state folder)."""
        if sp.reader is not None:
            sp.reader.join(timeout=2)  # the dead process's last lines first
        sp.proc = self._popen(sp.env["SERVICE_NAME"], sp.env)
        self._read_output(sp)

    async def _platform_invite(self) -> str:
        from browserfleet_contracts.workers import CreateInviteRequest, InvitePublic
        from browserfleet_core.messaging import RpcClient

        nc = await self.connect_admin()
        try:
            rpc = RpcClient(nc, timeout=10)
            invite: InvitePublic = await _retry(
                lambda: rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest())
            )
            return invite.code
        finally:
            await nc.close()

    async def _bootstrap(self) -> BootstrapReply:
        from browserfleet_core.messaging import RpcClient

        nc = await self.connect_admin()
        try:
            rpc = RpcClient(nc, timeout=15)
            return await _retry(lambda: rpc.call(endpoints.Auth.BOOTSTRAP, BootstrapRequest()))
        finally:
            await nc.close()

    def _wait_ready(self, timeout: float) -> None:
        """Bind, then announce: the gateway counts as up once its own process listens on its port (another
        dev stack's gateway may answer on it) and says it is ready."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for sp in self.processes:
                if sp.proc.poll() is not None and not (sp.name == "gateway" and self._gateway_port_lost(sp)):
                    if sp.reader is not None:
                        sp.reader.join(timeout=2)  # its last lines, which say why
                    said = "\n".join(sp.tail)
                    raise RuntimeError(
                        f"{sp.name} exited with code {sp.proc.returncode} during startup; its last lines:\n{said}"
                    )
            gateway = next(sp for sp in self.processes if sp.name == "gateway")
            if gateway.proc.poll() is not None or listens(gateway.proc.pid, self.gateway_port or 0) is False:
                time.sleep(0.25)
                continue
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.gateway_url}/health/ready", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            time.sleep(0.25)
        raise TimeoutError(f"gateway not ready after {timeout}s: {last}")

    def _gateway_port_lost(self, sp: ServiceProcess) -> bool:
        """The gateway died at startup because its port was taken after we chose it (another dev stack
        starting at the same moment): choose another and start it again, unless the port was asked for."""
        port = self.gateway_port or 0
        if self._gateway_port_fixed or port_is_free(port):
            return False
        self.gateway_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        sp.env["GATEWAY_PORT"] = str(self.gateway_port)
        _remember_port(self.home, "gateway", self.gateway_port)
        self._emit("platform", f"port {port} was taken meanwhile; the gateway moves to {self.gateway_port}")
        self._relaunch(sp)
        return True

    async def _wait_workers(self, workers: list[ServiceProcess], timeout: float) -> None:
        """Until each worker has beaten since it started (worker-gateway's `last_seen`): a worker beats once it
        has launched its browser and opened its pool's consumers, so a task submitted now starts at once."""
        if not workers or self.bootstrap is None:
            return
        from browserfleet_contracts.common import Actor
        from browserfleet_contracts.workers import ListWorkersRequest, WorkerPublic
        from browserfleet_core.messaging import RpcClient

        names = {sp.env.get("WORKER_NAME", ""): sp for sp in workers}
        nc = await self.connect_admin()
        try:
            rpc = RpcClient(nc, timeout=10)
            request = ListWorkersRequest(actor=Actor(org_id=self.bootstrap.org_id, role="admin"))

            async def beaten() -> None:
                listed: list[WorkerPublic] = await _retry(lambda: rpc.call(endpoints.Workers.LIST, request))
                for w in listed:
                    found = names.get(w.name)
                    if found and w.last_seen and w.last_seen.timestamp() >= found.started_at:
                        took = time.time() - found.started_at
                        self._emit(
                            "platform", f"{found.name} ready to take tasks ({took:.1f} s after it started)"
                        )
                        del names[w.name]

            await _until_none_pending(names, beaten, names.values(), timeout, "not ready")
        finally:
            await nc.close()

    async def _wait_services(self, timeout: float) -> None:
        """The gateway's readiness covers auth only; callers of `start()` may go straight to any service
        (tests create tasks through the scheduler), so each must answer before `start()` returns."""
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        nc = await self.connect_admin()
        try:
            waiting = dict(READY_PROBES)

            async def answered() -> None:
                for service, subject in list(waiting.items()):
                    with contextlib.suppress(NoRespondersError, NatsTimeout):
                        await nc.request(subject, b"{}", timeout=2)
                        del waiting[service]

            await _until_none_pending(waiting, answered, self.processes, timeout, "not answering")
        finally:
            await nc.close()

    # --- output ------------------------------------------------------------------------------
    def _pump(self, label: str, stream: IO[bytes], tail: collections.deque[str] | None = None) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if tail is not None:
                tail.append(line)
            self._emit(label, line)

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


async def _until_none_pending(
    pending: Mapping[str, Any],
    check: Callable[[], Awaitable[None]],
    processes: Iterable[ServiceProcess],
    timeout: float,
    failure: str,
) -> None:
    """`check` (which takes out of `pending` what has become ready) every 0.2 s until nothing is pending; a
    process that exits meanwhile, or `timeout`, ends the wait with an error naming what is left."""
    deadline = time.monotonic() + timeout
    while pending:
        for sp in processes:
            if sp.proc.poll() is not None:
                raise RuntimeError(f"{sp.name} exited with code {sp.proc.returncode} during startup")
        await check()
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{failure} after {timeout}s: {', '.join(sorted(pending))}")
            await asyncio.sleep(0.2)


async def _retry(call: Callable[[], Awaitable[T]], *, attempts: int = 60, delay: float = 0.5) -> T:
    """Services come up in parallel; the first requests may find no responder yet."""
    from browserfleet_core.errors import Unavailable

    for attempt in range(attempts):
        try:
            return await call()
        except Unavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _wait_migrated(gated: Gated) -> None:
    """The prelaunched migrations process, sent its DATABASE_URL, until it is done; its last lines if it fails."""
    try:
        code = gated.proc.wait()
    except BaseException:  # Ctrl-C: it goes too
        gated.proc.kill()
        gated.proc.wait()
        raise
    if code != 0:
        gated.reader.join(timeout=2)
        said = "\n".join(gated.tail)
        raise RuntimeError(f"migrations failed ({describe_returncode(code)}); the last lines:\n{said}")


def _ensure_database(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


def _remembered_port(home: Path, name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        value = json.loads((home / "ports.json").read_text()).get(name)
        return int(value) if value else None
    return None


def _remember_port(home: Path, name: str, port: int) -> None:
    path = home / "ports.json"
    data: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
    data[name] = port
    path.write_text(json.dumps(data))
