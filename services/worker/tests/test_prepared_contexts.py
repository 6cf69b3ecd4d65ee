"""A context opened while its task is being claimed (BrowserHost.prepare, attempt.py): it lets nothing through the
guard proxy before its task binds its policy, serves that one task only, and is closed when no task takes it (a
refused claim, a task with a profile)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import nats
import pytest
from browserfleet_contracts.tasks import ClaimReply, TaskDispatch, TaskSpec
from browserfleet_worker.attempt import run_attempt
from browserfleet_worker.browser import BrowserHost, take_trace
from browserfleet_worker.netguard import Policy, parse_networks
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker.steps import StepsRunner
from playwright.async_api import Error as PlaywrightError

LOCAL = parse_networks(["127.0.0.1/32"])


@pytest.fixture
async def host() -> AsyncIterator[BrowserHost]:
    h = BrowserHost(allowed_networks=LOCAL)  # its own: the tests count its contexts
    await h.start()
    try:
        yield h
    finally:
        await h.close()


def _contexts(host: BrowserHost) -> int:
    assert host._browser is not None
    return len(host._browser.contexts)


def _tokens(host: BrowserHost) -> set[str]:
    assert host._guard is not None
    return set(host._guard._policies)


async def test_a_prepared_context_reaches_nothing_until_its_task_binds_it(
    host: BrowserHost, site: str
) -> None:
    early = host.prepare()
    assert early is not None and early._pending is not None
    unbound = await early._pending
    assert unbound is not None and len(unbound.ctx.pages) == 1
    with pytest.raises(PlaywrightError, match="ERR_"):  # the guard answers 403 to unbound credentials
        await unbound.ctx.pages[0].goto(f"{site}/login")
    host.release(early)
    prepared = host.prepare()
    assert prepared is not None and prepared._pending is not None
    warm = await prepared._pending
    assert warm is not None
    policy = Policy(allowed_networks=LOCAL)
    async with host.context(policy, accept_downloads=True, prepared=prepared) as ctx:
        assert ctx is warm.ctx
        assert await ctx.cookies() == []
        spec = TaskSpec.model_validate(
            {
                "steps": [
                    {"action": "navigate", "url": f"{site}/orders"},
                    {"action": "extract", "name": "h", "selector": "h1"},
                ]
            }
        )
        out = await StepsRunner(spec, {}, timeout_seconds=30, policy=policy, trace_on_failure=False).run(ctx)
        assert out.status == "completed", out.error_message
        assert out.result["extracted"]["h"] == "Please log in"
        assert len(ctx.pages) == 1, "the steps ran on the prepared page"
    await host.closed()
    assert (_contexts(host), _tokens(host)) == (0, set())
    assert prepared.take() is None, "taken once"


async def test_a_prepared_context_no_task_takes_is_closed(host: BrowserHost) -> None:
    prepared = host.prepare()
    assert prepared is not None
    host.release(prepared)
    host.release(prepared)  # a second release finds nothing to do
    await host.closed()
    assert (_contexts(host), _tokens(host)) == (0, set())


async def test_a_task_with_a_profile_opens_its_own_and_the_prepared_one_closes(host: BrowserHost) -> None:
    prepared = host.prepare()
    assert prepared is not None and prepared._pending is not None
    warm = await prepared._pending
    assert warm is not None
    state: dict[str, Any] = {"cookies": [], "origins": []}
    async with host.context(
        Policy(allowed_networks=LOCAL), accept_downloads=True, storage_state=state, prepared=prepared
    ) as ctx:
        assert ctx is not warm.ctx and ctx.pages == []
    await host.closed()
    assert (_contexts(host), _tokens(host)) == (0, set())


async def test_a_prepared_context_of_a_replaced_browser_is_thrown_away(host: BrowserHost) -> None:
    prepared = host.prepare()
    assert prepared is not None and prepared._pending is not None
    old = await prepared._pending
    assert old is not None
    async with host.context(Policy(allowed_networks=LOCAL), accept_downloads=True):
        pass
    assert await host.recycle_if_due(after_tasks=1, memory_mb=None)
    async with host.context(Policy(allowed_networks=LOCAL), accept_downloads=True, prepared=prepared) as ctx:
        assert ctx is not old.ctx and ctx.browser is host._browser
    await host.closed()
    assert (_contexts(host), _tokens(host)) == (0, set())


class _Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.subject = "tasks.run.default.normal"
        self.settled: list[str] = []

    async def term(self) -> None:
        self.settled.append("term")


async def test_a_refused_claim_closes_the_context_prepared_for_it(host: BrowserHost, nats_url: str) -> None:
    dispatch = TaskDispatch(
        task_id="t-refused",
        org_id="org-1",
        attempt=1,
        priority="normal",
        timeout_seconds=30,
        spec=TaskSpec.model_validate({"steps": [{"action": "navigate", "url": "http://127.0.0.1:9/"}]}),
    )
    opened = asyncio.Event()

    async def call(_endpoint: Any, _request: Any) -> ClaimReply:
        for _ in range(200):  # the claim's round trip: the task's context opens meanwhile
            if _contexts(host) == 1 and take_trace(host._browser.contexts[0]) is not None:  # type: ignore[union-attr]
                opened.set()  # with its recording
                break
            await asyncio.sleep(0.05)
        return ClaimReply(granted=False, reason="already running elsewhere")

    nc = await nats.connect(nats_url)  # the task's cancel subscription, made before its claim
    rt: Any = SimpleNamespace(
        browser=host,
        nc=nc,
        rpc=SimpleNamespace(call=call),
        identity=SimpleNamespace(worker_key="sk_worker_x", worker_id=None),  # no live view opened ahead
        settings=WorkerSettings(nats_url=nats_url, worker_key="sk_worker_x"),
    )
    msg = _Msg(dispatch.model_dump_json().encode())
    try:
        await run_attempt(rt, msg)  # type: ignore[arg-type]
    finally:
        await nc.close()
    assert msg.settled == ["term"]
    assert opened.is_set(), "the context was opening while the claim was under way"
    await host.closed()
    assert (_contexts(host), _tokens(host)) == (0, set())
