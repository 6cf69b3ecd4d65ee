"""Process entry points shared by every service: `python -m browserfleet_<svc> [run|migrate]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` on uvloop where available; Ctrl-C and SIGTERM end it without a traceback."""
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep Windows dev possible
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main())


def service_main(
    name: str,
    *,
    run: Callable[[], Coroutine[Any, Any, None]],
    migrate: Callable[[], None] | None = None,
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"browserfleet-{name}")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "migrate"])
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.command == "migrate":
        if migrate is None:
            print(f"{name} has no database", file=sys.stderr)
            return
        migrate()
        return
    freeze_heap()
    run_async(run)


def freeze_heap() -> None:
    """Move what exists now (the modules, models and tables a service imports: ~10^5 objects) out of the
    cyclic collector's reach. None of it is ever garbage, and a full collection walking it held every request
    in hand for tens to hundreds of milliseconds (a read benchmark's p99); afterwards one walks only what the
    service made since. A service calls it again once it has built its app."""
    gc.collect()
    gc.freeze()


async def wait_for_shutdown() -> None:
    """Block until SIGINT or SIGTERM."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
