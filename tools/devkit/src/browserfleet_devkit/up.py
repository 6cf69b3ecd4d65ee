"""`browserfleet up` / `make dev`: the whole platform in the foreground, supervised, until Ctrl-C.

The platform is announced only once a worker is ready to take tasks, with the time it took. A crashed
service, worker, NATS or PostgreSQL is restarted with backoff (supervisor.py); after repeated crashes of one
of them the platform is stopped with a message naming it. Ctrl-C (or SIGTERM) stops everything, in order,
without a traceback, also during startup; further Ctrl-Cs while stopping are ignored rather than leave
half-stopped children behind.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .datadir import AlreadyRunning

if TYPE_CHECKING:
    from .devstack import Platform

# make dev's gateway is on 8080 when it is free at the first start, so the README's URL just works
PREFERRED_GATEWAY_PORT = 8080


def run(
    *,
    home: Path,
    port: int | None = None,
    workers: int = 1,
    nats_url: str | None = None,
    database_url: str | None = None,
    color: bool = False,
) -> int:
    from .gates import prelaunch

    # the services start importing now, while this process imports the dev stack (a second of CPU)
    early = prelaunch(workers, {})
    try:
        from .devstack import Platform
    except BaseException:
        early.close()
        raise
    platform = Platform(
        home=home,
        nats_url=nats_url,
        database_url=database_url,
        gateway_port=port,
        preferred_gateway_port=PREFERRED_GATEWAY_PORT,
        workers=workers,
        color=color,
        supervise=True,
        prelaunched=early,
    )
    stop_requested = threading.Event()
    ready = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop_requested.is_set():
            return  # already stopping: let it finish
        stop_requested.set()
        if not ready:
            raise KeyboardInterrupt  # unwinds start(), which stops what it had started

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        platform.start()
    except KeyboardInterrupt:
        print("\ninterrupted during startup; stopped", file=sys.stderr, flush=True)
        return 130
    except AlreadyRunning as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        print(f"\nbrowserfleet failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    ready = True
    banner(platform)
    supervisor = platform.supervisor
    assert supervisor is not None
    while not stop_requested.wait(0.5):
        if supervisor.failed.is_set():
            print(f"\n{supervisor.gave_up}\nstopping the platform", file=sys.stderr, flush=True)
            platform.stop()
            return 1
    print("\nstopping browserfleet…", flush=True)
    platform.stop()
    print("stopped.", flush=True)
    return 0


def banner(platform: Platform, ready_seconds: float | None = None) -> None:
    """What the terminal shows once the platform is ready (the dashboard's URL, the admin's password once)."""
    ready_seconds = platform.ready_seconds if ready_seconds is None else ready_seconds
    boot = platform.bootstrap
    url = platform.gateway_url
    lines = [
        "",
        "=" * 72,
        f"  browserfleet is ready in {ready_seconds or 0:.1f}s "
        + ("(a worker is taking tasks)" if platform.workers else "(no worker started: --workers 0)"),
        f"  dashboard    {url}/   (the gateway: open it and sign in as the admin below)",
        f"  API docs     {url}/docs",
        f"  data         {platform.home}",
    ]
    if boot is not None:
        lines.append(f"  organization {boot.org_id}")
        if boot.password:
            # printed to this terminal once; it is stored only as an argon2 hash and never logged
            lines += [
                f"  admin        {boot.admin_email}",
                f"  password     {boot.password}   (shown once: keep it)",
            ]
        else:
            lines.append(f"  admin        {boot.admin_email} (password was shown on first start)")
        lines += [
            "",
            "  or log in from a program:",
            f"    curl -s {url}/auth/login -H 'content-type: application/json' \\",
            f'      -d \'{{"email": "{boot.admin_email}", "password": "…"}}\'',
        ]
    lines += [
        "",
        "  A service that crashes is restarted (see its lines below). Ctrl-C stops everything.",
        "=" * 72,
        "",
    ]
    print("\n".join(lines), flush=True)
