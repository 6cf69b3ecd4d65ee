"""One real platform for the module (devstack, as `make dev` starts it: real NATS, PostgreSQL, every service
and a worker driving real Chromium), and real Chromium for the test's own browser, through pytest-playwright.

The test's browser reaches only 127.0.0.1: every request elsewhere is aborted and recorded, so a page that
needs the internet (a CDN script, a web font) fails its test here as it would fail on a closed network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from browserfleet_devkit.devstack import Platform
from browserfleet_gateway.static import CHECKOUT_DIST
from browserfleet_worker.browser import SYSTEM_CHROMIUM, launch_flags
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Route, expect

from ..platforms import own_platform
from .sites import HeldSite

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
VIEWPORT = {"width": 1280, "height": 800}
# hang protection on a loaded 2-core machine (Swagger UI parses the whole API in the page), not a speed check
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Running:
    platform: Platform
    lines: list[str]
    url: str
    admin_email: str
    admin_password: str

    def token(self, email: str | None = None, password: str | None = None) -> str:
        r = httpx.post(
            f"{self.url}/auth/login",
            json={"email": email or self.admin_email, "password": password or self.admin_password},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    if not (CHECKOUT_DIST / "index.html").is_file():
        pytest.fail(f"the dashboard is not built ({CHECKOUT_DIST} has no index.html): run `make ui`")
    lines: list[str] = []
    with own_platform(
        "bf_dash",
        tmp_path_factory.mktemp("home"),
        start=False,
        open_nats=True,
        output=lines.append,
        # every test signs in from 127.0.0.1: room for all of them in the per-address login limit (whose
        # own tests are the gateway's); the stand-in identity provider speaks http on 127.0.0.1
        env={"LOGIN_BURST": "100", "SSO_ALLOW_HTTP_ISSUERS": "true"},
    ) as platform:
        try:
            _start_outside_playwrights_loop(platform)
        except BaseException:
            print("\n".join(lines[-60:]))  # why a service did not come up
            raise
        try:
            boot = platform.bootstrap
            assert boot is not None and boot.password
            yield Running(platform, lines, platform.gateway_url, boot.admin_email, boot.password)
        finally:
            platform.stop()


def _start_outside_playwrights_loop(platform: Platform) -> None:
    """`Platform.start` runs asyncio.run, which refuses a thread with a running loop, and Playwright's sync
    API (a session fixture, set up before this module's) runs one in the main thread."""
    failure: list[BaseException] = []

    def start() -> None:
        try:
            platform.start()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=start, name="platform-start")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@pytest.fixture(scope="module")
def site() -> Iterator[HeldSite]:
    with HeldSite() as s:
        try:
            yield s
        finally:
            s.release_all()


# --- pytest-playwright: the machine's Chromium with the worker's flags ------------------------------------
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    executable = os.environ.get("BROWSER_EXECUTABLE") or (
        SYSTEM_CHROMIUM if Path(SYSTEM_CHROMIUM).is_file() else None
    )
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    args: dict[str, Any] = {**browser_type_launch_args, "args": launch_flags(sandbox=not root)}
    if executable:  # else Playwright's own build, where `playwright install chromium` put one
        args["executable_path"] = executable
    return args


@dataclass
class Browsing:
    """One signed-out browser context on the dashboard, with what it tried to reach off this machine and
    the errors its pages raised."""

    context: BrowserContext
    page: Page
    url: str
    offsite: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.url + path)

    def sign_in(self, email: str, password: str) -> None:
        self.goto("/")
        self.page.get_by_test_id("login-email").fill(email)
        self.page.get_by_test_id("login-password").fill(password)
        self.page.get_by_test_id("login-submit").click()
        self.page.get_by_test_id("nav").wait_for()

    def assert_clean(self) -> None:
        assert self.offsite == [], f"requests off this machine: {self.offsite}"
        assert self.page_errors == [], f"uncaught errors in the page: {self.page_errors}"
        assert self.csp_violations == [], f"blocked by the Content-Security-Policy: {self.csp_violations}"


@pytest.fixture
def browse(new_context: Callable[..., BrowserContext], running: Running) -> Iterator[Callable[[], Browsing]]:
    opened: list[Browsing] = []

    def open_one() -> Browsing:
        context = new_context(viewport=VIEWPORT, color_scheme="light", accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        b = Browsing(context, context.new_page(), running.url)

        def guard(route: Route) -> None:
            host = urlsplit(route.request.url).hostname or ""
            if host in LOCAL_HOSTS:
                route.continue_()
            else:
                b.offsite.append(route.request.url)
                route.abort("internetdisconnected")

        def console(msg: ConsoleMessage) -> None:
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
                b.csp_violations.append(msg.text)

        context.route("**/*", guard)
        b.page.on("console", console)
        b.page.on("pageerror", lambda exc: b.page_errors.append(str(exc)))
        opened.append(b)
        return b

    yield open_one
    for b in opened:
        b.assert_clean()


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Rewrites docs/screenshots/<name>.png (shown in the README) only when BF_UPDATE_SCREENSHOTS=1, so an
    ordinary run leaves the tree clean."""
    if os.environ.get("BF_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page, animations="disabled", caret="hide"
        )
