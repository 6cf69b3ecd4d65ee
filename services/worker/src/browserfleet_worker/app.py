"""Wiring: settings, browser, NATS, identity, then the worker loop until told to stop.

On the bus the worker is itself: it connects with its key as the token worker-gateway's auth callout checks
(docs/architecture.md "Securing the bus"), or, before it has one, with its invite code, which may only
register; it then connects again with the key it got. The streams and its pool's consumers are made by the
services (worker-gateway at registration, the scheduler's pool registry): its identity may not create them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

import nats.errors
from browserfleet_contracts.workers import WORKER_KEY_PREFIX
from browserfleet_core.breaker import breakers
from browserfleet_core.health import Health, breakers_probe, install, nats_probe
from browserfleet_core.messaging import BusCredentials, RpcClient, connect
from nats.aio.client import Client as NatsClient
from pydantic import ValidationError

from .browser import BrowserHost, BrowserNotFound
from .netguard import parse_networks
from .presence import WorkerConfigError, load_identity, obtain_identity
from .remote import run_remote
from .settings import WorkerSettings
from .worker import Worker

log = logging.getLogger(__name__)


async def run(settings: WorkerSettings, stop: asyncio.Event) -> None:
    """Runs one worker until `stop` is set; running tasks get `shutdown_grace_seconds` to finish."""
    browser = BrowserHost(
        executable=settings.browser_executable,
        headless=settings.headless,
        sandbox=settings.browser_sandbox,
        allowed_networks=parse_networks(settings.browser_allow_networks),
        warm_contexts=settings.browser_warm_contexts,
    )
    health = worker_health(settings, browser)
    # launch first: a machine without Chromium should fail at start with the install hint, not per task
    await browser.start()
    if settings.gateway_url is not None:  # a remote worker: the platform's WebSocket, no NATS
        try:
            health.mark_started()
            await run_remote(settings, browser, stop)
        finally:
            health.mark_stopping()
            await browser.close()
            log.info("worker stopped")
        return
    credential = _credential(settings)
    refusals = BusRefusals(settings.bus_refused_grace_seconds, stop)
    nc = await _connect(settings, credential, stop, refusals)
    try:
        identity = await obtain_identity(settings, RpcClient(nc, timeout=settings.rpc_timeout_seconds), stop)
        if identity.worker_key != credential:  # registered just now: from here on as the worker itself
            with contextlib.suppress(Exception):
                await nc.drain()
            nc = await _connect(settings, identity.worker_key, stop, refusals)
        worker = Worker(settings, nc, browser, identity)
        connected = nc
        health.add("nats", nats_probe(lambda: connected))
        health.mark_started()  # registered and connected as itself: it takes tasks from here on
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, worker.request_drain)
        try:
            await worker.run(stop)
        finally:
            health.mark_stopping()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        if refusals.verdict is not None:  # stopped because the bus kept refusing it: not a clean exit
            raise WorkerConfigError(refusals.verdict)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        await browser.close()
        log.info("worker stopped")


def worker_health(settings: WorkerSettings, browser: BrowserHost) -> Health:
    """The worker's checks on its metrics port: `nats` (its own connection, once registered), `browser`
    (degraded while Chromium is down: it is launched again before the next task) and `breakers` (degraded
    while the LLM endpoint's circuit is open). Unhealthy ("starting")
    until it has registered and connected as itself."""
    health = install(Health("worker", timeout=settings.health_timeout_seconds))

    async def chromium() -> str:
        if not browser.is_running():
            raise RuntimeError("Chromium is not running (it is launched again before the next task)")
        return f"Chromium running, {browser.active} context(s) open"

    health.add("browser", chromium, critical=False)
    health.add("breakers", breakers_probe(lambda: breakers), critical=False)  # the LLM endpoint's (agent.py)
    return health


def _credential(settings: WorkerSettings) -> str:
    """The worker's key (WORKER_KEY, else the one saved in WORKER_STATE_DIR), else its invite code."""
    if settings.worker_key:
        return settings.worker_key
    saved = load_identity(settings.worker_state_dir) if settings.worker_state_dir is not None else None
    if saved is not None:
        return saved.worker_key
    if settings.worker_invite_code:
        return settings.worker_invite_code
    raise WorkerConfigError("no worker key: set WORKER_KEY, or WORKER_INVITE_CODE (with WORKER_STATE_DIR)")


class BusRefusals:
    """NATS refusing this worker's key. Right after NATS restarted that is worker-gateway's auth callout not
    being back yet (the server refuses whom it cannot ask about), so a refusal is retried with NATS's own
    backoff, and only refusals without a success in between for `grace` seconds
    (BUS_REFUSED_GRACE_SECONDS) mean the key is unknown or was revoked: then `verdict` says so and `stop`
    is set. An admin's removal is said explicitly (the heartbeat's reply, `Worker._removed`) and stops the
    worker at once."""

    def __init__(
        self, grace: float, stop: asyncio.Event, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace = grace
        self.stop = stop
        self.clock = clock
        self.since: float | None = None
        self.verdict: str | None = None

    def refused(self, what: str) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
            log.warning(
                "the bus refused this %s (worker-gateway's auth callout may not be back yet): retrying for "
                "up to %.0f s",
                what,
                self.grace,
            )
        elif now - self.since >= self.grace and self.verdict is None:
            self.verdict = (
                f"NATS refused this {what} for {now - self.since:.0f} s: it is unknown, expired or was revoked "
                "(worker-gateway's log says which); register again with a new invite"
            )
            log.error("the bus kept refusing this %s (it was removed, or is unknown): stopping", what)
            self.stop.set()

    def accepted(self) -> None:
        if self.since is not None:
            log.info("the bus accepts this worker's key again")
        self.since = None


async def _connect(
    settings: WorkerSettings, credential: str, stop: asyncio.Event, refusals: BusRefusals
) -> NatsClient:
    """Connected as the key's worker (or as a registrant, for an invite code). NATS keeps trying (at start
    too) while it refuses the key, for BUS_REFUSED_GRACE_SECONDS (`BusRefusals`); refused that long, the key
    is unknown or was removed and the worker stops with `WorkerConfigError`."""
    creds = (
        BusCredentials.worker(credential, settings)
        if credential.startswith(WORKER_KEY_PREFIX)
        else BusCredentials.registrant(credential, settings)
    )
    what = "worker key" if credential.startswith(WORKER_KEY_PREFIX) else "invite code"

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
            refusals.refused(what)
        else:
            log.warning("bus: %s", exc)

    async def on_reconnected() -> None:
        refusals.accepted()

    connecting = asyncio.ensure_future(
        connect(
            settings.nats_url,
            name=f"worker-{settings.worker_name}",
            credentials=creds,
            error_cb=on_error,
            reconnected_cb=on_reconnected,
            connect_timeout=5,
        )
    )
    ended = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({connecting, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
    if connecting.done():
        refusals.accepted()
        return connecting.result()
    connecting.cancel()  # nats.connect retries for ever: the worker gave up, or was told to stop
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await connecting
    raise WorkerConfigError(refusals.verdict or "stopped before it could connect to NATS")


async def main() -> None:
    from browserfleet_core.observability import setup
    from browserfleet_core.runner import watch_event_loop

    try:
        settings = WorkerSettings()  # NATS_URL and the rest come from the environment
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise SystemExit(f"browserfleet-worker: bad configuration: {problems}") from None
    setup(settings)
    watch_event_loop()  # browserfleet_event_loop_lag_seconds on the metrics port, as every service has
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(settings, stop)
    except (WorkerConfigError, BrowserNotFound) as exc:
        # an operator's mistake: one clear line, not a traceback
        raise SystemExit(f"browserfleet-worker: {exc}") from None
