"""`browserfleet` command line.

`browserfleet up` runs the whole platform on this machine (the embedded default of DESIGN.md §6). It
needs the dev stack (browserfleet-devkit) and the platform packages, both present in the uv workspace;
the rest of the SDK needs only httpx.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _up(args: argparse.Namespace) -> int:
    try:
        from browserfleet_devkit.up import run
    except ImportError:  # pragma: no cover - SDK installed alone
        print(
            "`browserfleet up` needs the dev stack (the browserfleet-devkit package, which only the"
            " workspace's dev group installs): run `make dev` in a browserfleet checkout",
            file=sys.stderr,
        )
        return 2

    home = Path(args.home or os.environ.get("BROWSERFLEET_HOME", ".browserfleet")).resolve()
    # supervised, announced once a worker takes tasks, stopped by Ctrl-C: browserfleet_devkit.up
    return run(
        home=home,
        port=args.port,
        workers=args.workers,
        nats_url=os.environ.get("NATS_URL") or None,
        database_url=os.environ.get("DATABASE_URL") or None,
        color=sys.stdout.isatty(),
    )


# operator commands that reach PostgreSQL and NATS themselves: the browserfleet-ops package owns them
OPS_COMMANDS = {
    "backup": "write an encrypted backup of the whole platform",
    "restore": "restore a backup into an empty platform",
    "import-mvp": "import the MVP's JSON files",
}


def _ops(argv: list[str]) -> int:
    try:
        from browserfleet_ops.cli import main as ops_main
    except ImportError:  # pragma: no cover - SDK installed alone
        print(
            f"`browserfleet {argv[0]}` needs the browserfleet-ops package (pip install browserfleet-ops)",
            file=sys.stderr,
        )
        return 2
    return ops_main(argv)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] in OPS_COMMANDS:
        return _ops(args_in)
    parser = argparse.ArgumentParser(prog="browserfleet", description="browserfleet command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, summary in OPS_COMMANDS.items():  # listed here; their own parser reads their arguments
        sub.add_parser(name, help=summary, add_help=False)
    up = sub.add_parser("up", help="run the whole platform on this machine")
    up.add_argument("--home", help="data folder (default .browserfleet, or $BROWSERFLEET_HOME)")
    up.add_argument(
        "--port", type=int, default=None, help="gateway port (default: a free one, stable across runs)"
    )
    up.add_argument("--workers", type=int, default=1)
    if args_in[:1] == ["up"]:
        # the API commands import httpx, a third of a second of CPU before the stack can start anything
        return _up(parser.parse_args(args_in))
    from .commands import API_COMMANDS, add_api_commands, run_api_command

    add_api_commands(sub)
    args = parser.parse_args(args_in)
    if args.command == "up":
        return _up(args)
    if args.command in API_COMMANDS:
        return run_api_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
