"""The steps runner against real Chromium and the stand-in customer site (conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from browserfleet_contracts.tasks import TaskSpec
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.steps import StepsOutcome, StepsRunner

PNG = b"\x89PNG\r\n\x1a\n"


def spec(*steps: dict[str, Any]) -> TaskSpec:
    return TaskSpec.model_validate({"kind": "steps", "steps": list(steps)})


async def run(
    browser: BrowserHost, task: TaskSpec, secrets: dict[str, str] | None = None, timeout: float | None = None
) -> StepsOutcome:
    async with browser.context() as ctx:
        return await StepsRunner(task, secrets, timeout_seconds=timeout).run(ctx)


def login(site: str) -> list[dict[str, Any]]:
    return [
        {"action": "navigate", "url": f"{site}/login"},
        {"action": "fill", "selector": "#user", "value": "ada"},
        {"action": "fill", "selector": "#password", "value": "{{ secrets.PASSWORD }}"},
        {"action": "click", "selector": "#go"},
        {"action": "wait_for", "selector": "table#orders"},
    ]


async def test_login_extract_records_and_screenshots(browser: BrowserHost, site: str, password: str) -> None:
    task = spec(
        *login(site),
        {"action": "extract", "name": "heading", "selector": "h1"},
        {"action": "extract", "name": "invoice", "selector": "#invoice", "attribute": "href"},
        {
            "action": "extract",
            "name": "orders",
            "selector": "#orders tbody tr",
            "fields": {"id": "td.id", "item": "td.item", "total": "td.total"},
        },
        {"action": "screenshot", "name": "orders", "full_page": True},
        {"action": "screenshot", "name": "table", "selector": "#orders"},
    )
    out = await run(browser, task, {"PASSWORD": password})

    assert out.status == "completed", out.error_message
    assert out.result["extracted"] == {
        "heading": "Orders for ada",
        "invoice": "/invoice/A-1.pdf",
        "orders": [
            {"id": "A-1", "item": "Widget", "total": "12.50"},
            {"id": "A-2", "item": "Gadget", "total": "7.00"},
            {"id": "A-3", "item": "Gizmo", "total": None},
        ],
    }
    assert out.result["steps"] == len(task.steps)
    assert out.result["url"] == f"{site}/orders"
    assert out.result["title"] == "Orders"
    assert [a.name for a in out.artifacts] == ["orders.png", "table.png"]
    assert all(a.data.startswith(PNG) and a.content_type == "image/png" for a in out.artifacts)


async def test_records_agree_across_css_and_playwright_only_field_selectors(
    browser: BrowserHost, site: str, password: str
) -> None:
    """All-CSS fields are read in one call in the page; Playwright-only selectors (xpath=, :has-text, >>)
    and attributes must give the same records as before, row for row."""
    rows = "#orders tbody tr"
    task = spec(
        *login(site),
        {"action": "extract", "name": "css", "selector": rows, "fields": {"id": "td.id", "item": "td.item"}},
        {
            "action": "extract",
            "name": "engine",
            "selector": rows,
            "fields": {"id": "xpath=./td[1]", "item": "td:has-text('g')", "last": "td >> nth=2"},
        },
        {
            "action": "extract",
            "name": "classes",
            "selector": rows,
            "attribute": "class",
            "fields": {"c": "td"},
        },
        {"action": "extract", "name": "none", "selector": "#orders tfoot tr", "fields": {"id": "td.id"}},
    )
    out = await run(browser, task, {"PASSWORD": password})

    assert out.status == "completed", out.error_message
    got = out.result["extracted"]
    assert got["css"] == [
        {"id": "A-1", "item": "Widget"},
        {"id": "A-2", "item": "Gadget"},
        {"id": "A-3", "item": "Gizmo"},
    ]
    assert got["engine"] == [
        {"id": "A-1", "item": "Widget", "last": "12.50"},
        {"id": "A-2", "item": "Gadget", "last": "7.00"},
        {"id": "A-3", "item": "Gizmo", "last": ""},
    ]
    assert got["classes"] == [{"c": "id"}] * 3
    assert got["none"] == []


async def test_failing_step_reports_index_and_short_reason(browser: BrowserHost, site: str) -> None:
    task = spec(
        {"action": "navigate", "url": f"{site}/login"},
        {"action": "click", "selector": "#missing", "timeout_ms": 300},
        {"action": "extract", "selector": "h1"},
    )
    out = await run(browser, task)

    assert out.status == "failed"
    assert out.error_step == 1
    assert (
        out.error_message
        == "step 1 (click '#missing'): Timeout 300ms exceeded waiting for selector '#missing'"
    )
    assert out.result["steps"] == 1


async def test_optional_step_failure_does_not_fail_the_task(browser: BrowserHost, site: str) -> None:
    task = spec(
        {"action": "navigate", "url": f"{site}/login"},
        {"action": "click", "selector": "#cookie-banner", "timeout_ms": 200, "optional": True},
        {"action": "extract", "name": "button", "selector": "#go"},
    )
    out = await run(browser, task)

    assert out.status == "completed", out.error_message
    assert out.result["extracted"] == {"button": "Sign in"}
    warnings = [line for line in out.logs if line.level != "info"]  # info: one progress line per step
    assert [(line.level, line.step) for line in warnings] == [("warning", 1)]
    assert "step 1 (click '#cookie-banner')" in warnings[0].message


async def test_secret_values_never_leave_the_runner(browser: BrowserHost, site: str, password: str) -> None:
    """The echo page prints the password into the page, its title and the URL; none of it comes back."""
    echoed = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{site}/echo?q={{{{ secrets.PASSWORD }}}}"},
            {"action": "extract", "name": "echo", "selector": "#echo"},
        ),
        {"PASSWORD": password},
    )
    assert echoed.status == "completed", echoed.error_message
    assert echoed.result["extracted"]["echo"] == "You typed: ***"
    assert echoed.result["title"] == "Echo ***"

    failed = await run(
        browser,
        spec({"action": "navigate", "url": "http://127.0.0.1:1/{{ secrets.PASSWORD }}", "timeout_ms": 2000}),
        {"PASSWORD": password},
    )
    assert failed.status == "failed"
    assert failed.error_message is not None
    assert failed.error_message.startswith("step 0 (navigate 'http://127.0.0.1:1/{{ secrets.PASSWORD }}'): ")
    assert "***" in failed.error_message

    for out in (echoed, failed):
        dumped = json.dumps([out.result, out.error_message, [line.message for line in out.logs]])
        assert password not in dumped
        assert "hunter2" not in dumped


async def test_each_task_gets_a_fresh_context(browser: BrowserHost, site: str, password: str) -> None:
    first = await run(
        browser,
        spec(*login(site), {"action": "extract", "name": "h", "selector": "h1"}),
        {"PASSWORD": password},
    )
    assert first.result["extracted"]["h"] == "Orders for ada"

    second = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{site}/orders"},
            {"action": "extract", "name": "h", "selector": "h1"},
        ),
    )
    assert second.result["extracted"]["h"] == "Please log in"


async def test_task_timeout_stops_a_hanging_step(browser: BrowserHost, site: str) -> None:
    task = spec(
        {"action": "navigate", "url": f"{site}/login"},
        {"action": "wait_for", "selector": "#never", "timeout_ms": 60_000},
    )
    # long enough that a loaded machine still finishes the navigate inside it: the hang must be step 1's
    out = await run(browser, task, timeout=5)

    assert out.status == "timed_out"
    assert out.error_message == "timed out after 5 s"
    assert out.error_step == 1


async def test_unreleased_secret_fails_the_step_by_name(browser: BrowserHost, site: str) -> None:
    task = spec(
        {"action": "navigate", "url": f"{site}/login"},
        {"action": "fill", "selector": "#user", "value": "{{ secrets.NOPE }}"},
    )
    out = await run(browser, task, {})

    assert out.status == "failed"
    assert out.error_message == "step 1 (fill '#user'): secret NOPE was not released to this task"
