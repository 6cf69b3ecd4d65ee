"""The dev stack supervises what it starts (`make dev` = `browserfleet up`, run here as that command in a
subprocess, on a scratch data folder): a service, NATS or PostgreSQL killed -9 is started again and the
platform serves again; a second start on the same data folder is refused while the first runs on; Ctrl-C
stops everything, without a traceback, leaving no process behind. A unit that crashes on every start is
given up with a message naming it (the supervisor on a real process that always exits).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from browserfleet_devkit.supervisor import CrashPolicy, Supervisor

from tests.bench.common import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# generous: a machine busy with other suites starts Python slowly; speed is the benchmarks' business
PATIENCE = 120.0


@dataclass
class Launcher:
    """`browserfleet up` in the background, its output kept line by line."""

    home: Path
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    password: str = ""
    url: str = ""

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, *, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + PATIENCE
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if m := rx.search(line):
                    return m
            if self.proc.poll() is not None and not any(rx.search(x) for x in self.lines[after:]):
                time.sleep(0.5)  # the reader may still be behind the exit
                if not any(rx.search(x) for x in self.lines[after:]):
                    raise AssertionError(
                        f"exited ({self.proc.returncode}) before {pattern!r}:\n{self.tail()}"
                    )
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}:\n{self.tail()}")

    def tail(self, n: int = 80) -> str:
        return "\n".join(self.lines[-n:])

    def children(self) -> dict[int, str]:
        """pid -> command line of every process the launcher started directly (services, NATS)."""
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid:
                    cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    found[int(stat.parent.name)] = cmd
            except (OSError, ValueError, IndexError):
                continue
        return found

    def child(self, needle: str) -> int:
        for pid, cmd in self.children().items():
            if needle in cmd:
                return pid
        raise AssertionError(f"no child running {needle!r}: {self.children()}")

    def postmaster(self) -> int:
        return int((self.home / "postgres" / "postmaster.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _until(probe: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PATIENCE:.0f} s: {what}")
        time.sleep(0.2)


def _up(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "browserfleet_sdk.cli", "up", "--home", str(home), "--workers", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # SIGINT is sent to it alone, as a terminal's Ctrl-C reaches `browserfleet up`
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    base = tmp_path_factory.mktemp("devstack")
    base.chmod(0o755)  # embedded PostgreSQL runs as its own user when we are root
    home = base / "home"
    launcher = Launcher(home, _up(home))
    threading.Thread(target=launcher.read, daemon=True).start()
    try:
        m = launcher.wait_line(r"browserfleet is ready in (\d+\.\d)s")
        assert float(m.group(1)) > 0
        launcher.url = launcher.wait_line(r"dashboard +(http://127\.0\.0\.1:\d+)/").group(1)
        launcher.password = launcher.wait_line(r"password +(\S+)").group(1)
        yield launcher
    finally:
        if launcher.proc.poll() is None:
            launcher.proc.send_signal(signal.SIGINT)
            try:
                launcher.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.proc.pid, signal.SIGKILL)
                launcher.proc.wait()


def _token(stack: Launcher) -> str:
    r = httpx.post(
        f"{stack.url}/auth/login",
        json={"email": "admin@browserfleet.local", "password": stack.password},
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def _task_created(stack: Launcher, token: str) -> Callable[[], bool]:
    """A task can be created: gateway, auth, scheduler, NATS and PostgreSQL all serve."""

    def probe() -> bool:
        try:
            r = httpx.post(
                f"{stack.url}/api/v1/tasks",
                headers={"authorization": f"Bearer {token}"},
                json={"steps": [{"action": "navigate", "url": "http://127.0.0.1:9/"}]},
                timeout=10,
            )
        except httpx.HTTPError:
            return False
        return r.status_code == 201

    return probe


@pytest.mark.parametrize("unit", ["scheduler", "nats", "postgres"])
def test_a_unit_killed_with_sigkill_is_restarted_and_the_platform_serves_again(
    stack: Launcher, unit: str
) -> None:
    token = _token(stack)
    assert _task_created(stack, token)()
    mark = len(stack.lines)
    if unit == "postgres":
        victim = stack.postmaster()
    else:
        victim = stack.child("browserfleet_scheduler" if unit == "scheduler" else "nats-server")
    os.kill(victim, signal.SIGKILL)
    stack.wait_line(rf"platform \| {unit} stopped unexpectedly \(.*\); restarting in", after=mark)
    stack.wait_line(rf"platform \| {unit} started again", after=mark)
    assert not _alive(victim)
    if unit == "postgres":
        assert stack.postmaster() != victim
    else:
        stack.child("browserfleet_scheduler" if unit == "scheduler" else "nats-server")
    # the services find their dependency again by themselves: a task is accepted end to end
    _until(_task_created(stack, token), f"a task accepted after {unit} was killed")
    assert stack.proc.poll() is None


def test_a_second_start_on_the_same_data_folder_is_refused(stack: Launcher) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "browserfleet_sdk.cli", "up", "--home", str(stack.home), "--workers", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert second.returncode == 1, second.stdout + second.stderr
    assert "already running" in second.stderr and stack.url in second.stderr, second.stderr
    assert f"pid {stack.proc.pid}" in second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    assert httpx.get(f"{stack.url}/health/live", timeout=10).status_code == 200
    assert stack.proc.poll() is None


def test_ctrl_c_stops_everything_without_a_traceback(stack: Launcher) -> None:
    pids = set(stack.children()) | {stack.postmaster()}
    assert len(pids) >= 7  # six services (no worker here), NATS, PostgreSQL
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(PATIENCE) == 0, stack.tail()
    time.sleep(0.5)  # the reader thread takes the last lines
    own = [x for x in stack.lines if " | " not in x]  # the launcher's lines, not its services'
    assert "stopped." in own, stack.tail()
    assert not any("Traceback" in x for x in own), "\n".join(own)
    assert not [pid for pid in pids if _alive(pid)]
    assert not (stack.home / "postgres" / "postmaster.pid").exists()


@dataclass
class AlwaysCrashes:
    """A supervisor unit whose process exits with code 3 at once, every time it is started."""

    name: str = "always-crashes"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def restart(self) -> None:
        self.starts += 1
        self.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe_exit(self) -> str:
        assert self.proc is not None
        return f"exit code {self.proc.returncode}"


def test_a_unit_that_crashes_on_every_start_is_given_up_with_a_message() -> None:
    unit = AlwaysCrashes()
    unit.restart()
    said: list[str] = []
    policy = CrashPolicy(max_crashes=3, window_seconds=60, backoff=(0.05, 0.1))
    sup = Supervisor(lambda: [unit], said.append, policy, interval=0.02)
    sup.start()
    try:
        assert sup.failed.wait(PATIENCE)
    finally:
        sup.stop()
    assert unit.starts == 3  # the first start and two restarts; the third crash is the last straw
    assert sup.gave_up is not None
    assert sup.gave_up.startswith("always-crashes crashed 3 times within 60 s (last: exit code 3); giving up")
    assert said[-1] == sup.gave_up
    assert [x.split(";")[0] for x in said[:-1] if "stopped unexpectedly" in x] == [
        "always-crashes stopped unexpectedly (exit code 3)"
    ] * 2
    assert sum(1 for x in said if x.startswith("always-crashes started again")) == 2
    assert [r.how for r in sup.history] == ["exit code 3"] * 3


def test_a_unit_that_dies_at_start_up_is_named_with_its_last_lines(tmp_path: Path) -> None:
    from browserfleet_devkit.devstack import Platform, ServiceProcess

    lines: list[str] = []
    platform = Platform(home=tmp_path, output=lines.append)
    proc = subprocess.Popen(
        [sys.executable, "-c", "print('binding 127.0.0.1:9: address already in use'); raise SystemExit(1)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sp = ServiceProcess("worker-gateway", proc, None)
    platform.processes = [sp]
    platform._read_output(sp)
    proc.wait(PATIENCE)
    with pytest.raises(RuntimeError) as died:
        platform._wait_ready(PATIENCE)
    assert str(died.value).startswith("worker-gateway exited with code 1 during startup; its last lines:")
    assert "address already in use" in str(died.value)
