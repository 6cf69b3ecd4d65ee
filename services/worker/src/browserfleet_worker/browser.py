"""One Chromium per worker process, one fresh BrowserContext per task."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright

log = logging.getLogger(__name__)

SYSTEM_CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic (updates, sync, field trials) is noise at best and a data leak at worst
# on a machine that runs other people's tasks.
BASE_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

INSTALL_HINT = (
    "no Chromium found: install Playwright's build with `uv run playwright install chromium` "
    "(or `apt-get install chromium`), or set BROWSER_EXECUTABLE to a Chromium binary"
)


class BrowserNotFound(RuntimeError):
    pass


def find_chromium(
    configured: str | None, playwright_path: str | None, system_path: str = SYSTEM_CHROMIUM
) -> str:
    """The Chromium to launch.

    An explicitly configured BROWSER_EXECUTABLE wins (an operator who sets it means it, so a missing file is
    an error rather than a silent fallback); then Playwright's own build, which matches the driver's
    protocol exactly; then the system Chromium.
    """
    if configured:
        if not Path(configured).is_file():
            raise BrowserNotFound(f"BROWSER_EXECUTABLE={configured} does not exist; {INSTALL_HINT}")
        return configured
    if playwright_path and Path(playwright_path).is_file():
        return playwright_path
    if Path(system_path).is_file():
        return system_path
    raise BrowserNotFound(INSTALL_HINT)


def launch_flags(*, sandbox: bool) -> list[str]:
    return [*BASE_FLAGS, *([] if sandbox else ["--no-sandbox"])]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class BrowserHost:
    """Owns Playwright and the one Browser; relaunches it if it crashed between tasks."""

    def __init__(
        self, *, executable: str | None = None, headless: bool = True, sandbox: bool | None = None
    ) -> None:
        self._configured = executable
        self._headless = headless
        # Chromium's sandbox refuses to start as root; elsewhere keep it, it is the last line of defence.
        self._sandbox = (not _is_root()) if sandbox is None else sandbox
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._lock = asyncio.Lock()
        self.executable: str | None = None

    async def start(self) -> None:
        async with self._lock:
            await self._ensure()

    async def _ensure(self) -> Browser:
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        if self._pw is None:
            self._pw = await async_playwright().start()
        if self.executable is None:
            self.executable = find_chromium(self._configured, self._pw.chromium.executable_path)
        log.info("launching Chromium %s (sandbox %s)", self.executable, "on" if self._sandbox else "off")
        self._browser = await self._pw.chromium.launch(
            executable_path=self.executable,
            headless=self._headless,
            args=launch_flags(sandbox=self._sandbox),
            chromium_sandbox=self._sandbox,
        )
        return self._browser

    @asynccontextmanager
    async def context(self) -> AsyncIterator[BrowserContext]:
        """A fresh context (no cookies, storage or cache from any other task), always closed."""
        async with self._lock:
            browser = await self._ensure()
        ctx = await browser.new_context(accept_downloads=False)
        try:
            yield ctx
        finally:
            try:
                await ctx.close()
            except Exception:  # a crashed browser cannot close its contexts; nothing is left to leak
                log.debug("closing a browser context failed", exc_info=True)

    async def close(self) -> None:
        async with self._lock:
            if self._browser is not None:
                try:
                    await self._browser.close()
                except Exception:
                    log.debug("closing the browser failed", exc_info=True)
                self._browser = None
            if self._pw is not None:
                await self._pw.stop()
                self._pw = None
