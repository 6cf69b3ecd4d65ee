"""Wiring: settings, browser, NATS, identity, then the worker loop until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from browserfleet_core.messaging import RpcClient, connect, ensure_pool_consumers, ensure_streams
from pydantic import ValidationError

from .browser import BrowserHost, BrowserNotFound
from .netguard import parse_networks
from .service import Worker, WorkerConfigError, obtain_identity
from .settings import WorkerSettings

log = logging.getLogger(__name__)


async def run(settings: WorkerSettings, stop: asyncio.Event) -> None:
    """Runs one worker until `stop` is set; running tasks get `shutdown_grace_seconds` to finish."""
    browser = BrowserHost(
        executable=settings.browser_executable,
        headless=settings.headless,
        sandbox=settings.browser_sandbox,
        allowed_networks=parse_networks(settings.browser_allow_networks),
    )
    # launch first: a machine without Chromium should fail at start with the install hint, not per task
    await browser.start()
    nc = await connect(settings.nats_url, name=f"worker-{settings.worker_name}")
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        identity = await obtain_identity(settings, RpcClient(nc, timeout=settings.rpc_timeout_seconds), stop)
        await ensure_pool_consumers(js, identity.pool)
        worker = Worker(settings, nc, browser, identity)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, worker.request_drain)
        try:
            await worker.run(stop)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        await browser.close()
        log.info("worker stopped")


async def main() -> None:
    from browserfleet_core.observability import setup

    try:
        settings = WorkerSettings()  # NATS_URL and the rest come from the environment
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise SystemExit(f"browserfleet-worker: bad configuration: {problems}") from None
    setup(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(settings, stop)
    except (WorkerConfigError, BrowserNotFound) as exc:
        # an operator's mistake: one clear line, not a traceback
        raise SystemExit(f"browserfleet-worker: {exc}") from None
