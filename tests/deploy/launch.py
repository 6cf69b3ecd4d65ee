"""Start what a manifest says, outside containers: the command and environment read from docker-compose.yml or
the Kubernetes base (parsed, never copied), made to run on this machine, then asked its readiness probe.

What changes on the way out of the container, and nothing else:
* secrets: `${...}` in Compose from test values for every key of deploy/env.example, Kubernetes `secretKeyRef`s
  from test values for every key of k8s/base/secret.example.yaml (a key without a test value fails the test);
* addresses: a URL's host that is another container or in-cluster Service (`nats:4222`, `postgres:5432`,
  `nats.nats.svc.cluster.local:4222`, the OTLP collector) becomes the test's server on 127.0.0.1 (the collector a
  closed port: spans are dropped, the exporter still loads); an unknown host fails the test; bind addresses
  0.0.0.0 become 127.0.0.1;
* ports: every `*_PORT` setting gets a free port, and the probe's port must be one of them (a probe aimed at a
  port nothing listens on fails the test);
* paths: absolute paths in the environment or command (HOME=/tmp, /config/nats.conf) live under a scratch
  directory of the run, shared by the services of one manifest as their volumes are;
* the executable: `python` is this interpreter and `browserfleet-<name>` must be installed in this environment
  (uv sync installs every workspace package's entry points), else the test fails naming it.

A process that exits before its probe passes, a probe path that answers 404, or a start that does not become
ready within the cap fails with the process's own last lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent
READY_CAP_SECONDS = 240.0  # a bound on waiting, not a speed claim: failures are reported as soon as seen
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
URL = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<auth>[^/@\s]*@)?(?P<host>[A-Za-z0-9.-]+):(?P<port>\d+)"
)


class StartFailure(AssertionError):
    """The manifest's service did not start: what it did instead, in its own words."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Probe:
    """An HTTP readiness probe: `path` on the container's `port`; Compose's `command` runs once it passes."""

    path: str
    port: int
    command: list[str] | None = None


@dataclass
class Spec:
    """One container as the manifest declares it."""

    name: str
    command: list[str]
    env: dict[str, str]
    probe: Probe | None = None


@dataclass
class Host:
    """What the manifests' hosts become: `hosts[(host, port)]` = "127.0.0.1:<port>"; `ports[service]`: the
    free port each of the service's container ports got (`assign_ports`), so one service names another."""

    scratch: Path
    hosts: dict[tuple[str, int], str] = field(default_factory=dict)
    ports: dict[str, dict[int, int]] = field(default_factory=dict)


def assign_ports(host: Host, specs: list[Spec]) -> None:
    """A free port for every `*_PORT` setting of every spec, before any starts (one may name another)."""
    for spec in specs:
        mine = host.ports.setdefault(spec.name, {})
        for key, value in spec.env.items():
            if key.endswith("_PORT") and value.isdigit():
                mine.setdefault(int(value), free_port())


@dataclass
class Process:
    spec: Spec
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    last: str = "no answer yet"

    @property
    def name(self) -> str:
        return self.spec.name

    def url(self, path: str, port: int) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# a container path: a base64 secret may start with "/" too (1 in 64), but always holds "=" or "+"
_PATH = re.compile(r"/[\w.\-/]*")


def reroot(value: str, scratch: Path) -> str:
    """A container path under the scratch directory (created as a directory unless it names a file)."""
    path = scratch / value.lstrip("/")
    (path.parent if path.suffix else path).mkdir(parents=True, exist_ok=True)
    return str(path)


def localize(spec: Spec, host: Host) -> Process:
    """The spec made to run here (see the module's docstring); fails for what cannot."""
    scratch = host.scratch
    ports = host.ports.setdefault(spec.name, {})
    env: dict[str, str] = {}
    for key, value in spec.env.items():
        if key.endswith("_PORT") and value.isdigit():
            env[key] = str(ports.setdefault(int(value), free_port()))
        elif key.endswith("_HOST") and value in ("0.0.0.0", "::"):
            env[key] = "127.0.0.1"
        elif _PATH.fullmatch(value) and not value.startswith(str(scratch)):
            env[key] = reroot(value, scratch)
        else:
            env[key] = rewrite_urls(spec.name, key, value, host)
    argv = executable(spec)
    argv = [reroot(a, scratch) if a.startswith("/") and i else a for i, a in enumerate(argv)]
    if spec.probe is not None and spec.probe.port not in ports:
        raise StartFailure(
            f"{spec.name}: its readiness probe asks port {spec.probe.port}, which no *_PORT setting of its "
            f"environment sets (it sets {sorted(ports) or 'none'})"
        )
    base = {
        "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": reroot("/home", scratch),
        "LANG": "C.UTF-8",
        "TMPDIR": reroot("/tmp", scratch),
    }
    log = scratch / "logs" / f"{spec.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return Process(spec=spec, argv=argv, env={**base, **env}, ports=ports, log=log)


def rewrite_urls(name: str, key: str, value: str, host: Host) -> str:
    def swap(match: re.Match[str]) -> str:
        found = (match["host"], int(match["port"]))
        if match["host"] in LOOPBACK:
            return match[0]
        if found not in host.hosts:
            raise StartFailure(f"{name}: {key} names {found[0]}:{found[1]}, which the test does not provide")
        return f"{match['scheme']}{match['auth'] or ''}{host.hosts[found]}"

    return URL.sub(swap, value)


def executable(spec: Spec) -> list[str]:
    first, *rest = spec.command
    if first in ("python", "python3"):
        return [sys.executable, *rest]
    found = shutil.which(first, path=str(VENV_BIN))
    if found is None:
        raise StartFailure(
            f"{spec.name}: `{first}` is not installed in this environment (a missing package or entry point)"
        )
    return [found, *rest]


def start(process: Process) -> Process:
    out = process.log.open("ab")
    process.proc = subprocess.Popen(
        process.argv,
        env=process.env,
        cwd=process.env["HOME"],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopped with whatever it started (Chromium)
    )
    out.close()
    return process


def run_once(spec: Spec, host: Host, *, timeout: float = 180) -> str:
    """A one-shot container (migration, bootstrap, configuration): must exit 0; returns its output."""
    process = localize(spec, host)
    done = subprocess.run(
        process.argv,
        env=process.env,
        cwd=process.env["HOME"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise StartFailure(f"{spec.name} exited with code {done.returncode}:\n{output[-3000:]}")
    return output


def run_all(specs: list[Spec], host: Host, *, timeout: float = 180) -> list[str]:
    """One-shots that do not wait for one another (Compose's migrate-*, Kubernetes' Jobs), at once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        return list(pool.map(lambda spec: run_once(spec, host, timeout=timeout), specs))


def probe_once(process: Process) -> bool:
    """True once the probe passes. A 404 fails at once: the path does not exist."""
    probe = process.spec.probe
    assert probe is not None
    url = process.url(probe.path, probe.port)
    try:
        answer = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        process.last = f"{type(exc).__name__}: {exc}"
        return False
    if answer.status_code == 404:
        raise StartFailure(f"{process.name}: its readiness probe path {probe.path} does not exist (404)")
    process.last = f"{answer.status_code} {answer.text[:500]}"
    if answer.status_code != 200:
        return False
    if probe.command is not None:  # Compose's own healthcheck, aimed at the port it really got
        command = [a.replace(f":{probe.port}/", f":{process.ports[probe.port]}/") for a in probe.command]
        ran = subprocess.run(
            executable(Spec(process.name, command, {})),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if ran.returncode != 0:
            process.last = f"healthcheck exited {ran.returncode}: {ran.stderr[-500:]}"
            return False
    return True


def wait_ready(processes: list[Process], *, cap: float = READY_CAP_SECONDS) -> None:
    pending = [p for p in processes if p.spec.probe is not None]
    deadline = time.monotonic() + cap
    while pending:
        for process in list(pending):
            assert process.proc is not None
            if process.proc.poll() is not None:
                raise StartFailure(
                    f"{process.name} exited with code {process.proc.returncode} before its readiness probe "
                    f"passed:\n{process.tail()}"
                )
            if probe_once(process):
                pending.remove(process)
        if not pending:
            return
        if time.monotonic() > deadline:
            detail = "\n\n".join(f"{p.name}: {p.last}\n{p.tail(15)}" for p in pending)
            raise StartFailure(f"not ready within {cap:.0f} s:\n{detail}")
        time.sleep(0.5)


def stop(processes: list[Process], grace: float = 20) -> None:
    for process in processes:
        if process.proc is not None and process.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        if process.proc is None:
            continue
        try:
            process.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.proc.pid, signal.SIGKILL)
            process.proc.wait()


@contextlib.contextmanager
def running(processes: list[Process]) -> Iterator[list[Process]]:
    try:
        for process in processes:
            start(process)
        yield processes
    finally:
        stop(processes)


# --- Compose ------------------------------------------------------------------------------------------------
_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: `${X}`, `${X:-default}`, `${X-default}`, `${X:?error}`, `${X?error}`, `$$`."""

    def swap(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        have = env.get(name)
        empty = have is None or (have == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and (have is None if op == "-" else empty):
            return arg
        if op in (":?", "?") and (have is None if op == "?" else empty):
            raise StartFailure(f"compose: {name} is required ({arg})")
        return have or ""

    return _VAR.sub(swap, value)


def compose_spec(compose: dict[str, object], name: str, dotenv: Mapping[str, str]) -> Spec:
    services = compose["services"]
    assert isinstance(services, dict)
    svc = services[name]
    env = {k: interpolate(str(v), dotenv) for k, v in (svc.get("environment") or {}).items()}
    command = [interpolate(str(a), dotenv) for a in svc["command"]]
    probe = None
    check = svc.get("healthcheck")
    if check:
        test = [str(a) for a in check["test"]]
        assert test[0] == "CMD", f"{name}: healthcheck must be exec form"
        found = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\"\s]*)", " ".join(test))
        assert found, f"{name}: its healthcheck asks no local HTTP URL"
        probe = Probe(path=found.group(2), port=int(found.group(1)), command=test[1:])
    return Spec(name=name, command=command, env=env, probe=probe)


# --- Kubernetes ---------------------------------------------------------------------------------------------
def k8s_env(
    container: dict[str, object], config: Mapping[str, str], secret: Mapping[str, str]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []) or []:  # type: ignore[attr-defined]
        assert "configMapRef" in source, source
        env.update(config)
    for entry in container.get("env", []) or []:  # type: ignore[attr-defined]
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = entry["valueFrom"]
        if "secretKeyRef" in ref:
            key = ref["secretKeyRef"]["key"]
            if key not in secret:
                if ref["secretKeyRef"].get("optional"):
                    continue
                raise StartFailure(f"{entry['name']}: secret key {key} is not in secret.example.yaml")
            env[entry["name"]] = secret[key]
        elif "configMapKeyRef" in ref:
            env[entry["name"]] = config[ref["configMapKeyRef"]["key"]]
        else:
            raise StartFailure(f"{entry['name']}: unsupported valueFrom {ref}")
    return env


def k8s_probe(container: dict[str, object]) -> Probe:
    get = container["readinessProbe"]["httpGet"]  # type: ignore[index]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}  # type: ignore[attr-defined]
    port = get["port"]
    return Probe(path=get["path"], port=int(ports[port] if isinstance(port, str) else port))
