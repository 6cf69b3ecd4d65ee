"""Prelaunched service processes: started before the database and the bus are up, held at their start gate.

A start of the dev stack is CPU-bound, and its first part (initdb, PostgreSQL's start, the migrations) runs
on one core while the other is idle. So the processes are started meanwhile, `at_once` at a time, each
importing what it will run (`browserfleet_core.runner.wait_at_gate`) and then saying so, which starts the
next one; more at once would take the CPU that first part needs and delay everything behind it. Once the
platform is ready for them, `take()` sends one its environment and hands it over; `close()` ends those never
taken (a failed or interrupted start).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from browserfleet_core.runner import GATE_REACHED, START_GATE

DB_SERVICES = ("auth", "scheduler", "vault", "webhooks", "worker-gateway")
SERVICES = (*DB_SERVICES, "gateway")
# what a service process must not inherit from the launcher: its own bus identity and servers are set here
OWN_ENV = (
    "DATABASE_URL",
    "NATS_URL",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_SYSTEM_PASSWORD",
    "BUS_CALLOUT_SEED",
)

# the process that runs every service's migrations, prelaunched first: Alembic and the models are imported
# while PostgreSQL starts
MIGRATIONS = "migrations"

Emit = Callable[[str, str], None]


def module_of(service: str) -> str:
    return "browserfleet_" + service.replace("-", "_")


def worker_label(index: int, workers: int) -> str:
    return "worker" + (f"-{index + 1}" if workers > 1 else "")


def launch(service: str, env: Mapping[str, str], *, gated: bool = False) -> subprocess.Popen[bytes]:
    """`python -m browserfleet_<service> run` (MIGRATIONS: every service's migrations); gated: with its stdin
    a pipe, for the environment it waits for."""
    command = [sys.executable, "-m", module_of(service), "run"]
    if service == MIGRATIONS:
        command = [sys.executable, "-m", "browserfleet_core.migrations", "upgrade-all"]
        command += [module_of(s) for s in DB_SERVICES]
    return subprocess.Popen(
        command,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
    )


def prelaunch(workers: int, extra_env: Mapping[str, str], emit: Emit | None = None) -> Prelaunch:
    """The dev stack's processes, started one at a time from now: the workers first (nothing overlaps a
    worker's start once the services are up), then the services. Their environment until the gate: the
    launcher's without what it sets itself, and `extra_env` (Platform.env), so what a module reads at import
    is what it will run with."""
    pending = []
    labels = [(MIGRATIONS, MIGRATIONS)]
    labels += [("worker", worker_label(i, workers)) for i in range(workers)] + [(s, s) for s in SERVICES]
    for service, label in labels:
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_ENV)}
        env.update(SERVICE_NAME=service, PYTHONUNBUFFERED="1", LOG_LEVEL=env.get("LOG_LEVEL", "INFO"))
        env.update(extra_env)
        env[START_GATE] = "stdin"
        pending.append((label, env))
    # the launcher's own work up to the gates takes about one core; the others import
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    gates = Prelaunch(
        pending,
        lambda label, env: launch(env["SERVICE_NAME"], env, gated=True),
        emit,
        at_once=max(1, cores - 1),
    )
    gates.start()
    return gates


@dataclass
class Gated:
    label: str
    proc: subprocess.Popen[bytes]
    tail: collections.deque[str]
    reader: threading.Thread


class Prelaunch:
    def __init__(
        self,
        pending: list[tuple[str, dict[str, str]]],
        popen: Callable[[str, dict[str, str]], subprocess.Popen[bytes]],
        emit: Emit | None = None,
        *,
        at_once: int = 1,
    ) -> None:
        """`pending`: (label, environment) in the order to start them; `popen` starts one with stdin a pipe.
        Their output goes to `emit`, kept until one is attached."""
        self._pending = collections.deque(pending)
        self._popen = popen
        self._emit = emit
        self._held: list[tuple[str, str]] = []
        self._at_once = at_once
        self._started: dict[str, Gated] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        for _ in range(self._at_once):
            self._launch_next()

    def attach(self, emit: Emit) -> None:
        with self._lock:
            self._emit, held, self._held = emit, self._held, []
        for label, line in held:
            emit(label, line)

    def _say(self, label: str, line: str) -> None:
        with self._lock:
            emit = self._emit
            if emit is None:
                self._held.append((label, line))
                return
        emit(label, line)

    def stop_launching(self) -> list[str]:
        """No more prelaunches (their time is over: the rest start ungated); returns the labels never started."""
        with self._lock:
            left = [label for label, _ in self._pending]
            self._pending.clear()
            return left

    def _launch_next(self) -> None:
        with self._lock:
            if self._closed or not self._pending:
                return
            label, env = self._pending.popleft()
            proc = self._popen(label, env)
            tail: collections.deque[str] = collections.deque(maxlen=15)
            assert proc.stdout is not None
            reader = threading.Thread(target=self._pump, args=(label, proc.stdout, tail), daemon=True)
            self._started[label] = Gated(label, proc, tail, reader)
        reader.start()

    def _pump(self, label: str, stream: IO[bytes], tail: collections.deque[str]) -> None:
        released = False
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if not released and line == GATE_REACHED:
                released = True
                self._launch_next()
                continue
            tail.append(line)
            self._say(label, line)
        if not released:  # it died before its gate: the next one starts anyway
            self._launch_next()

    def take(self, label: str, env: dict[str, str]) -> Gated | None:
        """The prelaunched process of `label`, sent `env` to run with; None when it was never started."""
        with self._lock:
            gated = self._started.pop(label, None)
        if gated is None:
            return None
        stdin = gated.proc.stdin
        assert stdin is not None
        # one that died at its imports has said why in its last lines, which the readiness wait reports
        with contextlib.suppress(BrokenPipeError):
            stdin.write(json.dumps(env).encode() + b"\n")
            stdin.flush()
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
        return gated

    def close(self) -> None:
        """Ends every prelaunched process not taken: stdin closed (its gate's end) and SIGTERM, waited for."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            left, self._started = list(self._started.values()), {}
        for g in left:
            with contextlib.suppress(OSError):
                assert g.proc.stdin is not None
                g.proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                g.proc.send_signal(signal.SIGTERM)
        for g in left:
            try:
                g.proc.wait(15)
            except subprocess.TimeoutExpired:
                g.proc.kill()
                g.proc.wait()
            g.reader.join(timeout=2)
