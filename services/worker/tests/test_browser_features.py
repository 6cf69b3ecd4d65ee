"""Chromium features the fleet browser runs without, added to Playwright's own switch, never replacing it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from browserfleet_worker.browser import (
    DISABLED_FEATURES,
    BrowserHost,
    browser_process,
    chromium_pids,
    disabled_features_arg,
    driver_node_options,
    merged_features_arg,
)
from browserfleet_worker.netguard import Policy, parse_networks


def test_our_features_are_appended_to_playwrights_list() -> None:
    assert merged_features_arg("--disable-features=A,B") == "--disable-features=A,B," + ",".join(
        DISABLED_FEATURES
    )
    assert merged_features_arg(None) == "--disable-features=" + ",".join(DISABLED_FEATURES)
    assert merged_features_arg("--disable-features=" + ",".join(["A", *DISABLED_FEATURES])) is None


def _disable_features_switches(pids: list[int]) -> int:
    """How many --disable-features switches the browser process (not a renderer) was started with."""
    for pid in pids:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--remote-debugging-pipe" in args:
            return sum(a.startswith(b"--disable-features=") for a in args)
    raise AssertionError("no browser process found")


async def test_the_browser_keeps_playwrights_switches_and_adds_ours(browser: BrowserHost) -> None:
    await browser.start()
    switch = disabled_features_arg(browser.browser_pids())
    assert switch is not None
    features = switch.split("=", 1)[1].split(",")
    assert set(DISABLED_FEATURES) <= set(features)
    learnt = browser._features
    assert learnt is not None and learnt[0], "the first launch's switch was read"
    # Chromium keeps only the last --disable-features: Playwright's list must survive inside ours
    assert set(learnt[0].split("=", 1)[1].split(",")) < set(features)
    assert _disable_features_switches(browser.browser_pids()) == 1


async def test_a_second_browser_in_one_process_runs_without_our_features_too(browser: BrowserHost) -> None:
    """Each host reads Playwright's switch off its own browser: reading another host's (which already carries
    ours) left the second one with nothing to add, so it ran with autofill's server queries on (a test's
    context sent one to content-autofill.googleapis.com), and its pids (the crash tests kill them) were
    every browser's in the process."""
    await browser.start()
    before = set(chromium_pids(None))
    other = BrowserHost(allowed_networks=parse_networks(["127.0.0.1/32"]))
    await other.start()
    try:
        root = browser_process([p for p in chromium_pids(None) if p not in before])
        assert root is not None
        own = chromium_pids(None, root=root)
        switch = disabled_features_arg(own)
        assert switch is not None
        assert set(DISABLED_FEATURES) <= set(switch.split("=", 1)[1].split(","))
        assert _disable_features_switches(own) == 1
        # its own tree, which may have grown since (Chromium starts helper processes as it goes)
        theirs = set(other.browser_pids())
        assert root in theirs and set(own) <= theirs
        assert set(browser.browser_pids()).isdisjoint(theirs)
    finally:
        await other.close()


async def test_filling_a_form_sends_nothing_to_googles_autofill_server(
    browser: BrowserHost, site: str
) -> None:
    """Without the switch, Chromium queries content-autofill.googleapis.com about each filled form; the guard
    proxy sees (and refuses) those requests, so they would show as blocked here."""
    policy = Policy(allowed_networks=parse_networks(["127.0.0.1/32"]))
    async with browser.context(policy) as ctx:
        page = await ctx.new_page()
        for _ in range(2):
            await page.goto(f"{site}/login")
            await page.fill("#user", "ada")
            await page.fill("#password", "not-the-password")
            await page.click("#go")
        await asyncio.sleep(1.0)  # the autofill query goes out shortly after a fill, not with it
    assert [host for host, _ in policy.blocked] == []


async def test_a_context_opens_no_browser_ui_page(browser: BrowserHost) -> None:
    """The full Chromium gives each context's window WebUI pages of its own (the address bar's popup) unless
    their features are off: a renderer per task that no headless task ever shows."""
    await browser.start()
    async with browser.context(Policy(allowed_networks=parse_networks(["127.0.0.1/32"]))) as ctx:
        await ctx.new_page()
        await asyncio.sleep(0.5)  # the window's UI pages open just after the page
        assert browser._browser is not None
        cdp = await browser._browser.new_browser_cdp_session()
        targets = (await cdp.send("Target.getTargets", {}))["targetInfos"]
        await cdp.detach()
    assert [t["url"] for t in targets if t["type"] != "page"] == []


def test_the_drivers_node_options_keep_the_operators() -> None:
    assert driver_node_options(None) == "--max-semi-space-size=1"
    assert driver_node_options("--trace-warnings") == "--trace-warnings --max-semi-space-size=1"
    assert driver_node_options("--max-semi-space-size=8") == "--max-semi-space-size=8"


def _drivers_node_options(chromium: list[int]) -> set[bytes]:
    """NODE_OPTIONS of the processes that started these Chromium processes and are not Chromium (the driver)."""
    parents = {int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in chromium}
    options = set()
    for pid in parents - set(chromium):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        options |= {e for e in environ if e.startswith(b"NODE_OPTIONS=")}
    return options


async def test_playwrights_driver_runs_with_our_node_options(browser: BrowserHost) -> None:
    await browser.start()
    assert _drivers_node_options(browser.browser_pids()) == {b"NODE_OPTIONS=--max-semi-space-size=1"}
    assert "NODE_OPTIONS" not in os.environ  # this process's own environment is left as it was
