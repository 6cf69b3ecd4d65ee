"""The gated start (`runner.wait_at_gate`, the dev stack's `gates.Prelaunch`): a service started before its
database and bus imports first, says so, and runs only with the environment it is then sent; a gate closed
without one ends it without running; processes are prelaunched one at a time, each once the one before is at
its gate; those never taken are ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from browserfleet_core.runner import GATE_REACHED, START_GATE
from browserfleet_devkit.gates import Prelaunch

# a service whose `run` prints what it runs with; `preload` names a module it imports only when gated
SERVICE = """
import os, sys
from browserfleet_core.runner import service_main
async def run():
    print("running with", os.environ.get("PROBE"), os.environ.get("BROWSERFLEET_START_GATE"), "colorsys" in sys.modules)
service_main("probe", run=run, preload=("colorsys",))
"""


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SERVICE],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_gated_service_imports_then_runs_with_the_environment_it_is_sent() -> None:
    proc = _start({START_GATE: "stdin", "PROBE": "at-launch"})
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().rstrip("\n") == GATE_REACHED
    time.sleep(0.2)
    assert proc.poll() is None  # held at the gate
    proc.stdin.write(json.dumps({"PROBE": "sent"}) + "\n")
    proc.stdin.close()
    assert proc.wait(60) == 0
    assert proc.stdout.read().strip() == "running with sent None True"


def test_a_gate_closed_without_an_environment_ends_the_service_without_running() -> None:
    proc = _start({START_GATE: "stdin"})
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.wait(60) == 0
    assert "running" not in proc.stdout.read()


def test_an_ungated_service_runs_at_once() -> None:
    proc = _start({"PROBE": "env"})
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "running with env None False"


def test_prelaunch_starts_one_at_a_time_hands_over_and_ends_the_rest() -> None:
    launched: list[tuple[str, float]] = []
    lines: list[tuple[str, str]] = []
    lock = threading.Lock()

    def popen(label: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with lock:
            launched.append((label, time.monotonic()))
        return subprocess.Popen(
            [sys.executable, "-c", SERVICE],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def emit(label: str, line: str) -> None:
        with lock:
            lines.append((label, line))

    pending = [(name, {START_GATE: "stdin", "PROBE": f"{name}-launch"}) for name in ("a", "b", "c")]
    gates = Prelaunch(pending, popen, emit)
    gates.start()
    deadline = time.monotonic() + 60
    while len(launched) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [label for label, _ in launched] == ["a", "b", "c"]
    # nothing of the gate's own line reaches the output
    assert all(line != GATE_REACHED for _, line in lines)

    a = gates.take("a", {"PROBE": "a-sent"})
    assert a is not None
    assert a.proc.wait(60) == 0
    a.reader.join(10)
    assert ("a", "running with a-sent None True") in lines
    assert gates.take("a", {}) is None  # taken once

    procs = [g.proc for g in gates._started.values()]
    gates.close()
    assert all(p.poll() is not None for p in procs)
    assert not any(label in ("b", "c") and line.startswith("running") for label, line in lines)


def test_prelaunch_stopped_early_leaves_the_rest_unlaunched() -> None:
    started: list[str] = []

    def popen(label: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        started.append(label)
        return subprocess.Popen(
            [sys.executable, "-c", SERVICE],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    gates = Prelaunch([(n, {START_GATE: "stdin"}) for n in ("a", "b")], popen, lambda label, line: None)
    gates.start()
    assert gates.stop_launching() == ["b"]
    gates.close()
    assert started == ["a"]
    assert gates.take("b", {}) is None


def test_gated_migrations_import_first_then_migrate_with_the_database_url_they_are_sent() -> None:
    """Nothing listens on port 1: the migration it then runs fails on that URL, which proves it got it."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "browserfleet_core.migrations", "upgrade-all", "browserfleet_vault"],
        env={**env, START_GATE: "stdin"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().rstrip("\n") == GATE_REACHED
    proc.stdin.write(json.dumps({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}) + "\n")
    proc.stdin.close()
    assert proc.wait(120) != 0
    assert "127.0.0.1" in proc.stdout.read()
