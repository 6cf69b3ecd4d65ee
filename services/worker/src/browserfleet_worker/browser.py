"""One Chromium per worker process, one fresh BrowserContext per task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from browserfleet_core.background import run_in_background
from playwright.async_api import Browser, BrowserContext, Dialog, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from . import netlog
from .chromium import BASE_FLAGS as BASE_FLAGS
from .chromium import DISABLED_FEATURES as DISABLED_FEATURES
from .chromium import SYSTEM_CHROMIUM as SYSTEM_CHROMIUM
from .chromium import BrowserNotFound as BrowserNotFound
from .chromium import browser_memory_mb as browser_memory_mb
from .chromium import browser_process as browser_process
from .chromium import chromium_pids as chromium_pids
from .chromium import disabled_features_arg as disabled_features_arg
from .chromium import driver_node_options as driver_node_options
from .chromium import find_chromium as find_chromium
from .chromium import is_root
from .chromium import launch_flags as launch_flags
from .chromium import merged_features_arg as merged_features_arg
from .netguard import GuardProxy, IPNetwork, Policy

log = logging.getLogger(__name__)

BROWSER_GONE = "the browser crashed or disconnected"


@dataclass(frozen=True)
class TraceOptions:
    """How a task's failure trace records (StepsRunner): a prepared context's recording is kept by a task that
    wants exactly these, else stopped before its first step."""

    screenshots: bool
    snapshots: bool
    # the network log of the whole task, recorded beside a trace without snapshots (Playwright's trace records
    # the network only with them): the driver's HAR recorder, read only when the task fails
    network: bool = False


# a context whose recording started while its task was being claimed -> that recording's options; taken once
_TRACES: weakref.WeakKeyDictionary[BrowserContext, TraceOptions] = weakref.WeakKeyDictionary()


def take_trace(context: BrowserContext) -> TraceOptions | None:
    """The options of the trace `context` was prepared with (BrowserHost.prepare), None when none runs."""
    return _TRACES.pop(context, None)


class BrowserHost:
    """Owns Playwright and the one Browser; relaunches it if it crashed between tasks."""

    def __init__(
        self,
        *,
        executable: str | None = None,
        headless: bool = True,
        sandbox: bool | None = None,
        allowed_networks: list[IPNetwork] | None = None,
        warm_contexts: int = 0,
    ) -> None:
        self._configured = executable
        # contexts (each with its blank page) prepared ahead for the next tasks, never one reused
        # (BROWSER_WARM_CONTEXTS: off by default, see its description)
        self.warm_contexts = warm_contexts
        self._warm: list[asyncio.Task[_Warm | None]] = []
        self._closing: set[asyncio.Task[None]] = set()  # finished tasks' contexts being closed
        self.warm_taken = 0
        self.allowed_networks = list(allowed_networks or [])
        self._guard: GuardProxy | None = None
        self.active = 0
        self.tasks_since_launch = 0
        self.launches = 0
        self.recycles = 0
        self.last_launch_seconds = 0.0
        self.last_context_seconds = 0.0
        self._headless = headless
        # Chromium's sandbox refuses to start as root; elsewhere keep it, it is the last line of defence.
        self._sandbox = (not is_root()) if sandbox is None else sandbox
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._lock = asyncio.Lock()
        self.executable: str | None = None
        self._faults: dict[int, str] = {}  # id(context) -> what broke under its task (see `fault`)
        # (Playwright's --disable-features switch, ours with DISABLED_FEATURES added), learnt at first launch
        self._features: tuple[str, str] | None = None
        # the running browser's own process (its renderers, zygote and GPU process descend from it): another
        # BrowserHost's browser in this process is never taken for ours
        self._browser_pid: int | None = None

    async def start(self) -> None:
        async with self._lock:
            await self._ensure()
            self._refill()

    def is_running(self) -> bool:
        """Chromium is up (one that crashed is launched again before the next task)."""
        return self._browser is not None and self._browser.is_connected()

    async def _launch(self) -> Browser:
        assert self._pw is not None and self.executable is not None
        default, merged = self._features or ("", "")
        # other hosts' browsers in this process (tests, the bench): not ours
        others = set(chromium_pids(self.executable))
        browser = await self._pw.chromium.launch(
            executable_path=self.executable,
            headless=self._headless,
            args=[*launch_flags(sandbox=self._sandbox), *([merged] if merged else [])],
            ignore_default_args=[default] if default else None,
            chromium_sandbox=self._sandbox,
        )
        self._browser_pid = browser_process([p for p in chromium_pids(self.executable) if p not in others])
        return browser

    def _guard_proxy(self) -> GuardProxy:
        if self._guard is None:
            self._guard = GuardProxy()
        return self._guard

    async def _ensure(self) -> Browser:
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        if self._guard is None or self._guard.port == 0:
            await self._guard_proxy().start()
        if self._pw is None:
            self._pw = await start_playwright()
        if self.executable is None:
            self.executable = find_chromium(self._configured, self._pw.chromium.executable_path)
        log.info("launching Chromium %s (sandbox %s)", self.executable, "on" if self._sandbox else "off")
        started = time.monotonic()
        self._browser = await self._launch()
        if self._features is None:
            # Playwright's default switches are not public: read them off the first launch, once per process
            default = disabled_features_arg(self.browser_pids())
            merged = merged_features_arg(default)
            self._features = (default, merged) if default and merged else ("", "")
            if default and merged:
                with contextlib.suppress(Exception):
                    await self._browser.close()
                self._browser = await self._launch()
        self.last_launch_seconds = time.monotonic() - started
        self.launches += 1
        self.tasks_since_launch = 0
        return self._browser

    @asynccontextmanager
    async def context(
        self,
        policy: Policy | None = None,
        *,
        storage_state: dict[str, Any] | None = None,
        accept_downloads: bool = False,
        prepared: Prepared | None = None,
    ) -> AsyncIterator[BrowserContext]:
        """A fresh context (no cookies, storage or cache from any other task), always closed.

        Every connection goes through the guard proxy under `policy` (default: no domain limit, internal
        addresses blocked except the operator's allowance). Dialogs are dismissed and popups closed, so a
        hostile page cannot stall a step. `prepared` (from `prepare`) is taken when the options are a
        prepared context's, else thrown away.
        """
        policy = policy if policy is not None else Policy(allowed_networks=list(self.allowed_networks))
        async with self._lock:
            browser = await self._ensure()
            guard = self._guard_proxy()
            self.active += 1
            # a prepared context has exactly the options of a task without a profile
            plain = accept_downloads and storage_state is None
            warm = prepared.take() if prepared is not None and plain else None
            if warm is None and self._warm and plain:
                warm = self._warm.pop(0)
        if prepared is not None:
            self.release(prepared)  # not taken (other options): thrown away
        started = time.monotonic()
        user = ""
        try:
            ready = await self._take(warm, browser, guard, policy) if warm is not None else None
            if ready is not None:
                ctx, user = ready
            else:
                user, password = guard.register(policy)
                ctx = await self._new_context(browser, guard, user, password, accept_downloads, storage_state)
                ctx.on("page", _tame_page)
        except BaseException:
            guard.unregister(user)
            async with self._lock:
                self.active -= 1
            raise
        self.last_context_seconds = time.monotonic() - started
        self._refill()
        key = id(ctx)
        closing = False

        def broke(reason: str) -> None:
            if not closing:
                self._faults.setdefault(key, reason)

        def on_page(page: Page) -> None:
            page.on("crash", lambda _p: broke("a page of the task crashed"))

        def on_disconnected(_b: Browser) -> None:
            broke(BROWSER_GONE)

        ctx.on("page", on_page)
        for page in ctx.pages:  # a prepared context's page opened before this task
            on_page(page)
        ctx.on("close", lambda _c: broke("the task's browser context closed unexpectedly"))
        browser.on("disconnected", on_disconnected)
        try:
            yield ctx
        finally:
            closing = True
            browser.remove_listener("disconnected", on_disconnected)
            self._faults.pop(key, None)
            guard.unregister(user)  # from here on nothing of this context reaches the network
            # the task is over: its context closes while its result goes out and the next task starts
            closed = asyncio.create_task(_close_context(ctx))
            self._closing.add(closed)
            closed.add_done_callback(self._closing.discard)
            self.active -= 1
            self.tasks_since_launch += 1

    async def closed(self) -> None:
        """Returns once every finished task's context is closed."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _new_context(
        self,
        browser: Browser,
        guard: GuardProxy,
        user: str,
        password: str,
        accept_downloads: bool,
        storage_state: dict[str, Any] | None,
    ) -> BrowserContext:
        return await browser.new_context(
            accept_downloads=accept_downloads,
            service_workers="block",  # a service worker would fetch outside the page's view
            proxy={"server": guard.server, "username": user, "password": password, "bypass": "<-loopback>"},
            storage_state=storage_state,  # type: ignore[arg-type]
        )

    def _refill(self) -> None:
        """Starts preparing contexts until `warm_contexts` are ready or on their way (browser up only)."""
        browser, guard = self._browser, self._guard
        if browser is None or guard is None or not browser.is_connected():
            return
        while len(self._warm) < self.warm_contexts:
            self._warm.append(asyncio.create_task(self._prepare(browser, guard)))

    def prepare(self, trace: TraceOptions | None = None) -> Prepared | None:
        """Starts a fresh context (and its blank page, and its trace with `trace`'s options) for a task about to
        be claimed, so that the claim's round trip and the context's set-up overlap; None while the browser is
        down. Its proxy credentials are reserved: nothing leaves it until `context(prepared=...)` binds its
        task's policy. One not taken must be given to `release`."""
        browser, guard = self._browser, self._guard
        if browser is None or guard is None or not browser.is_connected():
            return None
        return Prepared(asyncio.create_task(self._prepare(browser, guard, trace)))

    def release(self, prepared: Prepared) -> None:
        """Closes a prepared context that no task took (its claim was refused, its task ended before the
        browser): in the background, with the finished tasks' contexts."""
        pending = prepared.take()
        if pending is None:
            return
        closed = asyncio.create_task(self._drop_prepared(pending))
        self._closing.add(closed)
        closed.add_done_callback(self._closing.discard)

    async def _drop_prepared(self, pending: asyncio.Task[_Warm | None]) -> None:
        try:
            warm = await pending
        except Exception:
            return
        if warm is not None and self._guard is not None:
            await _discard(warm, self._guard)

    async def _prepare(
        self, browser: Browser, guard: GuardProxy, trace: TraceOptions | None = None
    ) -> _Warm | None:
        """A fresh context and blank page under reserved proxy credentials: no request leaves it before its
        task's policy is bound. With `trace`, its recording starts too (three driver round trips a task
        no longer makes after its claim); a context whose recording could not start is prepared without one."""
        user, password = guard.reserve()
        ctx: BrowserContext | None = None
        try:
            ctx = await self._new_context(browser, guard, user, password, True, None)
            ctx.on("page", _tame_page)
            # the recording first, then the page: a page opened while the recording was starting could miss its
            # snapshotter (a failure trace with no DOM snapshot, seen under load), so they no longer overlap
            await _start_trace(ctx, trace)
            await ctx.new_page()
            return _Warm(browser, ctx, user)
        except Exception:
            log.debug("preparing a browser context failed", exc_info=True)
        except asyncio.CancelledError:
            guard.unregister(user)
            if ctx is not None:
                await _quietly(asyncio.wait_for(ctx.close(), 10))
            raise
        guard.unregister(user)
        if ctx is not None:
            await _quietly(asyncio.wait_for(ctx.close(), 10))
        return None

    async def _take(
        self, prepared: asyncio.Task[_Warm | None], browser: Browser, guard: GuardProxy, policy: Policy
    ) -> tuple[BrowserContext, str] | None:
        """The prepared context bound to `policy`, or None when it is unusable (its browser crashed or was
        replaced, its page is gone): the caller then opens one the usual way."""
        try:
            warm = await prepared
        except Exception:
            return None
        if warm is None:
            return None
        pages = warm.ctx.pages
        if (
            warm.browser is not browser
            or not browser.is_connected()
            or len(pages) != 1
            or pages[0].is_closed()
        ):
            await _discard(warm, guard)
            return None
        guard.bind(warm.token, policy)
        self.warm_taken += 1
        return warm.ctx, warm.token

    async def _drop_warm(self) -> None:
        """Closes every prepared context (before the browser closes or is replaced)."""
        warm, self._warm = self._warm, []
        for prepared in warm:
            prepared.cancel()
        for ready in await asyncio.gather(*warm, return_exceptions=True):
            if isinstance(ready, _Warm) and self._guard is not None:
                await _discard(ready, self._guard)

    async def fault(self, context: BrowserContext, *, probe_seconds: float = 5.0) -> str | None:
        """Why `context` broke under its task: the browser crashed or disconnected, the context closed, or a
        page crashed; None while it is healthy (a failed step is not a fault).

        Playwright may report a step's "Target closed" error before the disconnect event, so a context with
        no fault on record is asked one cheap question; one that cannot answer is broken too.
        """
        if context.browser is not None and not context.browser.is_connected():
            return BROWSER_GONE
        known = self._faults.get(id(context))
        if known is not None:
            return known
        try:
            await asyncio.wait_for(context.cookies(), probe_seconds)
        except (PlaywrightError, TimeoutError):
            if context.browser is not None and not context.browser.is_connected():
                return BROWSER_GONE
            return self._faults.get(id(context), "the task's browser context stopped answering")
        return None

    async def recycle_if_due(self, *, after_tasks: int, memory_mb: float | None) -> bool:
        """Restarts the browser between tasks when it has run `after_tasks` tasks or uses too much memory."""
        async with self._lock:
            if self._browser is None or self.active:
                return False
            due = after_tasks > 0 and self.tasks_since_launch >= after_tasks
            if not due and memory_mb is not None:
                used = browser_memory_mb(self.browser_pids())
                due = used is not None and used > memory_mb
            if not due:
                return False
            log.info("recycling the browser after %d task(s)", self.tasks_since_launch)
            await self.closed()
            await self._drop_warm()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._browser.close(), 10)
            self._browser = None
            await self._ensure()
            self.recycles += 1
            self._refill()
            return True

    def browser_pids(self) -> list[int]:
        """This host's Chromium processes (its browser process and every one below it), for memory and for crash
        tests; [] before the first launch."""
        if self._browser_pid is None:
            return []
        return chromium_pids(self.executable, root=self._browser_pid)

    async def close(self) -> None:
        async with self._lock:
            await self.closed()
            await self._drop_warm()
            if self._browser is not None:
                try:
                    await self._browser.close()
                except Exception:
                    log.debug("closing the browser failed", exc_info=True)
                self._browser = None
            if self._pw is not None:
                await self._pw.stop()
                self._pw = None
            if self._guard is not None:
                await self._guard.close()
                self._guard = None


@dataclass
class _Warm:
    browser: Browser  # the one it was made in: after a crash or a recycle it is thrown away
    ctx: BrowserContext
    token: str  # its reserved guard-proxy credentials


class Prepared:
    """A context being prepared for one task (BrowserHost.prepare): taken once, by that task's `context` or by
    `release`."""

    def __init__(self, pending: asyncio.Task[_Warm | None]) -> None:
        self._pending: asyncio.Task[_Warm | None] | None = pending

    def take(self) -> asyncio.Task[_Warm | None] | None:
        pending, self._pending = self._pending, None
        return pending


async def start_playwright() -> Playwright:
    """Playwright with its driver started under `driver_node_options` (it copies this process's environment
    when it spawns the driver, inside `start`)."""
    before = os.environ.get("NODE_OPTIONS")
    os.environ["NODE_OPTIONS"] = driver_node_options(before)
    try:
        return await async_playwright().start()
    finally:
        if before is None:
            os.environ.pop("NODE_OPTIONS", None)
        else:
            os.environ["NODE_OPTIONS"] = before


async def _close_context(ctx: BrowserContext) -> None:
    try:
        await asyncio.wait_for(ctx.close(), 10)
    except Exception:  # a crashed browser cannot close its contexts; nothing is left to leak
        log.debug("closing a browser context failed", exc_info=True)


async def start_recording(ctx: BrowserContext, trace: TraceOptions) -> None:
    """Starts `trace`'s recording on `ctx` in the driver, without the client's stack session.

    `tracing.start` also opens a session in the driver for the Python stacks of the calls made while it runs
    (the trace viewer's source tab: here the worker's own code, nothing a customer can use), with a temporary
    directory of its own. Only stopping the recording ends it, and a success's recording is never stopped (its
    context's close discards it): every task left a directory in the temporary directory and a session in the
    driver, and each call of a traced task then appended its stack to every session left so far (driver
    memory growing with the square of the tasks run). Started on the tracing channel, as `tracing.start` does
    but for that session, no session exists; `tracing.stop(path)` saves a trace without stacks."""
    channel = getattr(getattr(ctx.tracing, "_impl_obj", None), "_channel", None)
    if channel is None or not hasattr(channel, "tracingStartChunk"):  # another client: the public call
        await ctx.tracing.start(screenshots=trace.screenshots, snapshots=trace.snapshots)
    else:
        await channel.tracingStart(
            name=None,
            snapshotDom=trace.snapshots,
            snapshotAria=None,
            snapshotScreen=None,
            screencast=trace.screenshots,
            coverage=None,
            live=None,
        )
        await channel.tracingStartChunk(name=None, title=None)
    if trace.network and channel is not None:
        await netlog.start(ctx, channel)


async def _start_trace(ctx: BrowserContext, trace: TraceOptions | None) -> None:
    """`trace`'s recording on `ctx`, on record for its task (`take_trace`); none when it cannot start."""
    if trace is None:
        return
    try:
        await start_recording(ctx, trace)
    except PlaywrightError:
        log.debug("tracing unavailable", exc_info=True)
        return
    _TRACES[ctx] = trace


async def _discard(warm: _Warm, guard: GuardProxy) -> None:
    guard.unregister(warm.token)
    await _quietly(asyncio.wait_for(warm.ctx.close(), 10))


async def task_page(context: BrowserContext) -> Page:
    """The page a task starts on: the blank one its context was prepared with, else a new one."""
    for page in context.pages:
        if not page.is_closed() and page.url == "about:blank":
            return page
    return await context.new_page()


def _tame_page(page: Page) -> None:
    """Dialogs are dismissed at once; a popup (a page opened by another page) is closed."""

    def on_dialog(dialog: Dialog) -> None:
        run_in_background(_quietly(dialog.dismiss()))

    page.on("dialog", on_dialog)
    if len(page.context.pages) > 1:
        log.info("closing a popup")
        run_in_background(_quietly(page.close()))


async def _quietly(aw: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await aw
