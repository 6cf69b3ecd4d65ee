"""`browserfleet` command line.

`browserfleet up` runs the whole platform on this machine (the embedded default of DESIGN.md §6). It
needs the platform packages (present in the uv workspace); the rest of the SDK needs only httpx.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def _up(args: argparse.Namespace) -> int:
    try:
        from browserfleet_core.devstack import Platform
    except ImportError:  # pragma: no cover - SDK installed alone
        print(
            "`browserfleet up` needs the platform packages: run it from the browserfleet workspace",
            file=sys.stderr,
        )
        return 2

    home = Path(args.home or os.environ.get("BROWSERFLEET_HOME", ".browserfleet")).resolve()
    port = args.port
    if port is None and not (home / "ports.json").exists():
        # first start: 8080 when free, so the README's URL just works; later starts reuse the port they had
        from browserfleet_core.embedded import port_is_free

        port = 8080 if port_is_free(8080) else None
    platform = Platform(
        home=home,
        nats_url=os.environ.get("NATS_URL") or None,
        database_url=os.environ.get("DATABASE_URL") or None,
        gateway_port=port,
        workers=args.workers,
        color=sys.stdout.isatty(),
    )
    started = time.monotonic()
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    # a shell that starts us in the background leaves SIGINT ignored; Ctrl-C must always stop us
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        platform.start()
    except KeyboardInterrupt:
        print("\ninterrupted during startup; stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"\nbrowserfleet failed to start: {exc}", file=sys.stderr)
        return 1
    ready_in = time.monotonic() - started
    _banner(platform, ready_in)
    try:
        while not stop_requested:
            dead = [sp for sp in platform.processes if sp.proc.poll() is not None]
            if dead:
                names = ", ".join(f"{sp.name} (exit {sp.proc.returncode})" for sp in dead)
                print(f"\n{names} stopped unexpectedly; shutting the platform down", file=sys.stderr)
                platform.stop()
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("\nstopping browserfleet…", flush=True)
    platform.stop()
    print("stopped.", flush=True)
    return 0


def _banner(platform: object, ready_in: float) -> None:
    from browserfleet_core.devstack import Platform

    assert isinstance(platform, Platform)
    boot = platform.bootstrap
    url = platform.gateway_url
    lines = [
        "",
        "=" * 72,
        f"  browserfleet is ready in {ready_in:.1f}s",
        f"  gateway      {url}",
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
            "  log in:",
            f"    curl -s {url}/auth/login -H 'content-type: application/json' \\",
            f'      -d \'{{"email": "{boot.admin_email}", "password": "…"}}\'',
        ]
    lines += ["", "  Ctrl-C stops everything.", "=" * 72, ""]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="browserfleet", description="browserfleet command line")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole platform on this machine")
    up.add_argument("--home", help="data folder (default .browserfleet, or $BROWSERFLEET_HOME)")
    up.add_argument(
        "--port", type=int, default=None, help="gateway port (default: a free one, stable across runs)"
    )
    up.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
