"""Process entry points shared by every service: `python -m browserfleet_<svc> [run|migrate]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)

# Set by a launcher (the dev stack) that starts a service before its database and bus are up: the process
# imports what it will run, then waits for one JSON line on stdin, the environment it runs with.
START_GATE = "BROWSERFLEET_START_GATE"
# the line it prints once its imports are done (the launcher starts the next process then)
GATE_REACHED = "browserfleet: at the start gate"


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
    preload: Sequence[str] = (),
) -> None:
    """`preload`: modules `run` imports only once it runs, imported ahead when the start is gated."""
    parser = argparse.ArgumentParser(prog=f"browserfleet-{name}")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "migrate"])
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.command == "migrate":
        if migrate is None:
            print(f"{name} has no database", file=sys.stderr)
            return
        migrate()
        return
    if os.environ.get(START_GATE) == "stdin":
        wait_at_gate(preload)
    freeze_heap()
    run_async(run)


def wait_at_gate(preload: Sequence[str] = ()) -> None:
    """The gated start: the imports first (while the launcher starts the database, the bus and migrations),
    then the environment the launcher sends once they are ready. Its settings are read only after that, so
    a configuration error is the same as an ungated start's. A launcher that went away ends the process."""
    for module in preload:
        importlib.import_module(module)
    print(GATE_REACHED, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        raise SystemExit(0)  # stdin closed before the gate opened: the launcher stopped or died
    env = json.loads(line)
    os.environ.pop(START_GATE, None)
    os.environ.update({str(k): str(v) for k, v in env.items()})


def freeze_heap() -> None:
    """Move what exists now (the modules, models and tables a service imports: ~10^5 objects) out of the
    cyclic collector's reach. None of it is ever garbage, and a full collection walking it held every request
    in hand for tens to hundreds of milliseconds (a read benchmark's p99); afterwards one walks only what the
    service made since. A service calls it again once it has built its app."""
    gc.collect()
    gc.freeze()


# The youngest generation is collected once this many more objects exist than were freed (Python's default:
# 700). With tens of requests in hand their live objects passed 700 again and again, so each young collection
# found them alive and moved them on, and their end then cost older collections (the gateway: 0.022 ms of CPU
# per read, pauses up to 4 ms). What a request leaves is freed by reference counting; cycles wait longer.
YOUNG_COLLECTION = 10_000


def settle_heap() -> None:
    """Once a service has started (connections, subscriptions, its app built: ~30,000 more objects, the
    scheduler's full collections took 16 ms): freeze that too, and collect the young generation less often.
    Called from a running event loop, it also starts `watch_event_loop` there."""
    freeze_heap()
    gc.set_threshold(YOUNG_COLLECTION, *gc.get_threshold()[1:])
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    watch_event_loop()


LOOP_LAG = Histogram(
    "browserfleet_event_loop_lag_seconds",
    "How late the service's event loop woke a timer: how long ready work waited for its turn",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# How often the watcher asks to be woken: four timer wakes a second cost nothing measurable.
LOOP_LAG_INTERVAL_SECONDS = 0.25
_watchers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


def watch_event_loop(interval: float = LOOP_LAG_INTERVAL_SECONDS) -> asyncio.Task[None]:
    """Export `browserfleet_event_loop_lag_seconds`: how late the running loop woke a timer set `interval`
    ahead. Everything a service does waits its turn on its one loop, so this is how long a ready message,
    request or reply waited behind other work (CPU-bound callbacks, a starved process, a blocking call).
    One watcher per loop; it ends with its loop."""
    loop = asyncio.get_running_loop()
    found = _watchers.get(loop)
    if found is not None and not found.done():
        return found
    task = _watchers[loop] = loop.create_task(_watch(interval), name="event-loop-lag")
    task.add_done_callback(lambda t: _watchers.pop(loop, None) if _watchers.get(loop) is t else None)
    return task


async def _watch(interval: float) -> None:
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(interval)
        LOOP_LAG.observe(max(0.0, time.perf_counter() - asked - interval))


async def wait_for_shutdown() -> None:
    """Block until SIGINT or SIGTERM (the service has started: its heap is settled first)."""
    import signal

    settle_heap()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
