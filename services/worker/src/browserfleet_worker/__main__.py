"""`browserfleet-worker [run]` / `python -m browserfleet_worker`: an in-cluster worker (NATS_URL and the rest
from the environment), or, with `--gateway`, a worker on any machine that reaches the platform's URL only:

    browserfleet-worker --gateway https://fleet.example.com --invite inv_...

(the flags stand for GATEWAY_URL, WORKER_INVITE_CODE, WORKER_STATE_DIR, WORKER_NAME, WORKER_SLOTS and
WORKER_TAGS; docs/websocket.md "Remote workers")."""

from __future__ import annotations

import argparse
import os
import sys

from browserfleet_core.runner import service_main

from .app import main as run_worker

FLAGS = {
    "gateway": "GATEWAY_URL",
    "invite": "WORKER_INVITE_CODE",
    "state_dir": "WORKER_STATE_DIR",
    "name": "WORKER_NAME",
    "slots": "WORKER_SLOTS",
    "tags": "WORKER_TAGS",
}


def parse(argv: list[str]) -> tuple[str, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="browserfleet-worker",
        description="A browserfleet worker: in-cluster (NATS_URL and the rest from the environment), or with "
        "--gateway on any machine that reaches the platform's URL (docs/websocket.md, Remote workers).",
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run"])
    parser.add_argument("--gateway", help="the platform's URL: run as a remote worker over its WebSocket")
    parser.add_argument("--invite", help="an invite code (first start only: the key is saved)")
    parser.add_argument("--state-dir", help="where the worker key is kept (default ~/.browserfleet/worker)")
    parser.add_argument("--name", help="the name admins see (default: the host name)")
    parser.add_argument("--slots", help="tasks run at once")
    parser.add_argument("--tags", help="comma-separated tags")
    args = parser.parse_args(argv)
    env = {var: str(value) for flag, var in FLAGS.items() if (value := getattr(args, flag)) is not None}
    return args.command, env


def main() -> None:
    command, env = parse(sys.argv[1:])
    os.environ.update(env)
    service_main("worker", run=run_worker, argv=[command])


if __name__ == "__main__":
    main()
