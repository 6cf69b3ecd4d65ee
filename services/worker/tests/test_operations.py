"""Operations: a browser crash fails only the running task and the worker recovers; recycling."""

from __future__ import annotations

import asyncio

from browserfleet_contracts.tasks import TaskSpec
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import Policy, parse_networks
from browserfleet_worker.steps import StepsRunner

from .conftest import kill_browser

LOCAL = parse_networks(["127.0.0.1/32"])


def spec(*steps: dict[str, object]) -> TaskSpec:
    return TaskSpec.model_validate({"kind": "steps", "steps": list(steps)})


async def test_killing_the_browser_fails_the_running_task_and_the_next_one_runs(site: str) -> None:
    host = BrowserHost(allowed_networks=LOCAL)  # its own browser: this test kills it
    await host.start()
    try:
        hanging = spec(
            {"action": "navigate", "url": f"{site}/login"},
            {"action": "wait_for", "selector": "#never", "timeout_ms": 60_000},
        )

        async def run_hanging() -> object:
            async with host.context(Policy(allowed_networks=LOCAL)) as ctx:
                return await StepsRunner(hanging, trace_on_failure=False).run(ctx)

        running = asyncio.create_task(run_hanging())
        await asyncio.sleep(1.5)  # let it reach the wait; the kill is the fault being injected
        kill_browser(host)
        try:
            result = await asyncio.wait_for(running, 30)
            failed = getattr(result, "status", None) == "failed"
        except Exception:  # the task failed with the browser; the worker turns this into a failed attempt
            failed = True
        assert failed

        # the next task relaunches the browser by itself
        async with host.context(Policy(allowed_networks=LOCAL)) as ctx:
            out = await StepsRunner(
                spec({"action": "navigate", "url": f"{site}/login"}, {"action": "extract", "selector": "#go"})
            ).run(ctx)
        assert out.status == "completed", out.error_message
        assert host.launches == 2

        # recycling after K tasks, between tasks
        assert await host.recycle_if_due(after_tasks=1, memory_mb=None)
        assert host.launches == 3 and host.recycles == 1
        assert not await host.recycle_if_due(after_tasks=0, memory_mb=None)
    finally:
        await host.close()
