"""Contexts prepared ahead of their tasks (BrowserHost warm_contexts): each serves one task only, lets nothing
through the guard proxy before the task's policy is bound, and is thrown away when the browser it was made in
is gone; a task with a profile, or other options, opens its own."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from browserfleet_contracts.tasks import TaskSpec
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import GuardProxy, Policy, parse_networks
from browserfleet_worker.steps import StepsRunner
from playwright.async_api import Error as PlaywrightError

LOCAL = parse_networks(["127.0.0.1/32"])


@pytest.fixture
async def warm() -> AsyncIterator[BrowserHost]:
    host = BrowserHost(allowed_networks=LOCAL, warm_contexts=1)  # its own: one test recycles it
    await host.start()
    try:
        yield host
    finally:
        await host.close()


async def _proxy_get(guard: GuardProxy, token: str, url: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", guard.port)
    cred = base64.b64encode(f"{token}:x".encode()).decode()
    writer.write(f"GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic {cred}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    writer.close()
    return head


async def test_a_reserved_token_is_refused_until_bound_and_binds_once(site: str) -> None:
    guard = GuardProxy()
    await guard.start()
    try:
        token, _ = guard.reserve()
        assert b" 403 " in await _proxy_get(guard, token, f"{site}/login")
        assert b" 407 " in await _proxy_get(guard, "not-a-token", f"{site}/login")
        guard.bind(token, Policy(allowed_networks=LOCAL))
        assert b" 200 " in await _proxy_get(guard, token, f"{site}/login")
        with pytest.raises(KeyError):  # one context, one task: a bound token is never rebound
            guard.bind(token, Policy(allowed_networks=parse_networks(["0.0.0.0/0"])))
        registered, _ = guard.register(Policy())
        with pytest.raises(KeyError):
            guard.bind(registered, Policy())
        guard.unregister(token)
        assert b" 407 " in await _proxy_get(guard, token, f"{site}/login")
    finally:
        await guard.close()


async def test_a_prepared_page_reaches_nothing_before_its_task(warm: BrowserHost, site: str) -> None:
    assert len(warm._warm) == 1
    prepared = await warm._warm[0]
    assert prepared is not None
    page = prepared.ctx.pages[0]
    assert page.url == "about:blank"
    with pytest.raises(PlaywrightError, match="ERR_"):  # the guard answers 403 to unbound credentials
        await page.goto(f"{site}/login")


async def test_each_task_takes_a_new_prepared_context_and_leaves_nothing_behind(
    warm: BrowserHost, site: str
) -> None:
    seen = []
    for user in ("ada", "bob"):
        policy = Policy(allowed_networks=LOCAL)
        async with warm.context(policy, accept_downloads=True) as ctx:
            seen.append(ctx)
            assert await ctx.cookies() == [], "a prepared context starts empty"
            spec = TaskSpec.model_validate(
                {
                    "steps": [
                        {"action": "navigate", "url": f"{site}/login"},
                        {"action": "fill", "selector": "#user", "value": user},
                        {"action": "navigate", "url": f"{site}/orders"},
                        {"action": "extract", "name": "h", "selector": "h1"},
                    ]
                }
            )
            out = await StepsRunner(spec, {}, timeout_seconds=30, policy=policy, trace_on_failure=False).run(
                ctx
            )
            assert out.status == "completed", out.error_message
            assert out.result["extracted"]["h"] == "Please log in"
            assert len(ctx.pages) == 1, "the steps ran on the prepared page, no second renderer"
            assert policy.blocked == []
    assert warm.warm_taken == 2
    assert seen[0] is not seen[1]
    assert warm._guard is not None and warm._guard._policies.keys() == {
        t.token for t in [await p for p in warm._warm] if t is not None
    }, "a finished task's credentials are gone; only the next prepared context's are left"


async def test_a_task_with_a_profile_or_without_downloads_opens_its_own(warm: BrowserHost) -> None:
    async with warm.context(
        Policy(allowed_networks=LOCAL), storage_state={"cookies": [], "origins": []}
    ) as a:
        assert a.pages == []
    async with warm.context(Policy(allowed_networks=LOCAL), accept_downloads=False) as b:
        assert b.pages == []
    assert warm.warm_taken == 0


async def test_prepared_contexts_of_a_replaced_browser_are_thrown_away(warm: BrowserHost) -> None:
    old = await warm._warm[0]
    assert old is not None
    async with warm.context(Policy(allowed_networks=LOCAL), accept_downloads=True):
        pass
    assert await warm.recycle_if_due(after_tasks=1, memory_mb=None)
    assert old.ctx.pages == [] or old.ctx.pages[0].is_closed()
    async with warm.context(Policy(allowed_networks=LOCAL), accept_downloads=True) as ctx:
        assert ctx.browser is warm._browser and ctx.browser is not old.browser
        assert len(ctx.pages) == 1
    assert warm.warm_taken == 2
