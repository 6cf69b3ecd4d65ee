"""Every step action, safe browsing and hostile pages, against real Chromium and the stand-in site on
127.0.0.1 (conftest.py `actions_site`)."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from browserfleet_contracts.tasks import TaskCreate, TaskSpec
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import Policy, parse_networks
from browserfleet_worker.steps import StepsOutcome, StepsRunner
from pydantic import ValidationError

LOCAL = parse_networks(["127.0.0.1/32"])


def spec(*steps: dict[str, Any], **extra: Any) -> TaskSpec:
    return TaskSpec.model_validate({"kind": "steps", "steps": list(steps), **extra})


async def run(
    browser: BrowserHost,
    task: TaskSpec,
    *,
    policy: Policy | None = None,
    allow_evaluate: bool = False,
    timeout: float | None = 30,
    max_download_bytes: int = 1024 * 1024,
    trace: bool = False,
) -> StepsOutcome:
    policy = policy or Policy(allowed_networks=LOCAL)
    async with browser.context(policy, accept_downloads=True) as ctx:
        runner = StepsRunner(
            task,
            {},
            timeout_seconds=timeout,
            policy=policy,
            allow_evaluate=allow_evaluate,
            max_download_bytes=max_download_bytes,
            trace_on_failure=trace,
        )
        return await runner.run(ctx)


async def test_every_interaction_action(browser: BrowserHost, actions_site: str) -> None:
    content = base64.b64encode(b"hello").decode()
    task = spec(
        {"action": "navigate", "url": f"{actions_site}/actions", "wait_until": "domcontentloaded"},
        {"action": "dblclick", "selector": "#dbl"},
        {"action": "hover", "selector": "text=hover me"},
        {"action": "type", "selector": "#typed", "text": "abc", "delay_ms": 5},
        {"action": "select_option", "selector": "role=combobox", "labels": ["Green"]},
        {"action": "check", "selector": "#agree"},
        {"action": "uncheck", "selector": "#news"},
        {"action": "upload", "selector": "#file", "files": [{"name": "a.txt", "content_base64": content}]},
        {"action": "scroll", "selector": "#bottom"},
        {"action": "scroll", "y": -500},
        {"action": "click", "selector": "xpath=//a[@id='later']"},
        {"action": "wait_for", "url": "**/actions#done"},
        {"action": "wait_for", "load_state": "networkidle"},
        {"action": "wait_for", "delay_ms": 10},
        {"action": "press", "selector": "#typed", "key": "End"},
        {"action": "assert", "selector": "#dbl", "text": "double"},
        {"action": "assert", "selector": "#hov", "text": "hovered", "visible": True},
        {"action": "assert", "selector": "#keys", "text": "4"},  # 3 typed keys + End
        {"action": "assert", "selector": "#files", "text": "a.txt:5"},
        {"action": "assert", "selector": "#prices tbody tr", "count": 2},
        {"action": "assert", "url": "**/actions#done"},
        {"action": "click", "selector": "#inbtn", "frame": "#frm"},
        {"action": "extract", "name": "inner", "selector": "#inbtn", "frame": "#frm"},
        {"action": "extract", "name": "color", "selector": "#color", "attribute": "id"},
        {"action": "extract", "name": "prices", "selector": "#prices", "mode": "table"},
        {"action": "extract", "name": "cells", "selector": "#prices td", "mode": "all"},
        {"action": "extract", "name": "frame_html", "selector": "#frm", "mode": "inner_html"},
        {"action": "screenshot", "name": "view"},
        {"action": "screenshot", "name": "full", "full_page": True},
        {"action": "screenshot", "name": "table", "selector": "#prices"},
        {"action": "pdf", "name": "page"},
        {"action": "download", "selector": "#dl"},
    )
    out = await run(browser, task)
    assert out.status == "completed", out.error_message
    ex = out.result["extracted"]
    assert ex["inner"] == "clicked"
    assert ex["prices"] == [{"Item": "Widget", "Price": "12.50"}, {"Item": "Gadget", "Price": "7.00"}]
    assert ex["cells"] == ["Widget", "12.50", "Gadget", "7.00"]
    names = {a.name: a for a in out.artifacts}
    assert set(names) == {"view.png", "full.png", "table.png", "page.pdf", "report.csv"}
    assert names["page.pdf"].data.startswith(b"%PDF")
    assert names["report.csv"].data == b"a,b\n1,2\n"
    assert names["report.csv"].content_type == "text/csv"


async def test_select_check_state_is_real(browser: BrowserHost, actions_site: str) -> None:
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/actions"},
            {"action": "select_option", "selector": "#color", "values": ["g"]},
            {"action": "check", "selector": "#agree"},
            {
                "action": "evaluate",
                "name": "state",
                "expression": "[color.value, agree.checked, news.checked]",
            },
        ),
        allow_evaluate=True,
    )
    assert out.status == "completed", out.error_message
    assert out.result["extracted"]["state"] == ["g", True, True]


async def test_evaluate_is_refused_unless_allowed(browser: BrowserHost, actions_site: str) -> None:
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/actions"},
            {"action": "evaluate", "expression": "1"},
        ),
    )
    assert out.status == "failed"
    assert out.error_message == "step 1 (evaluate '1'): evaluate is not allowed for this organization"


async def test_pagination_repeat_and_if(browser: BrowserHost, actions_site: str) -> None:
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/list?page=1"},
            {
                "action": "repeat",
                "next": "#next",
                "max_iterations": 10,
                "steps": [{"action": "extract", "name": "items", "selector": "li.item", "mode": "all"}],
            },
            {
                "action": "if",
                "selector": "#next",
                "then": [{"action": "extract", "name": "branch", "selector": "h1"}],
                "otherwise": [{"action": "extract", "name": "branch", "selector": "li.item"}],
            },
        ),
    )
    assert out.status == "completed", out.error_message
    assert out.result["extracted"]["items"] == [f"item {p}-{i}" for p in (1, 2, 3) for i in range(3)]
    assert out.result["extracted"]["branch"] == "item 3-0"
    assert out.result["url"].endswith("page=3")

    capped = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/list?page=1"},
            {"action": "repeat", "next": "#next", "max_iterations": 2, "steps": []},
        ),
    )
    assert capped.result["url"].endswith("page=2")
    assert any("max_iterations=2" in line.message for line in capped.logs)


async def test_assert_failure_and_nested_failure_messages(browser: BrowserHost, actions_site: str) -> None:
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/actions"},
            {"action": "assert", "selector": "#title", "text": "Nope", "timeout_ms": 200},
        ),
    )
    assert out.error_message == (
        "step 1 (assert '#title'): assertion failed: '#title' text is 'Actions', expected it to contain 'Nope'"
    )
    nested = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/actions"},
            {
                "action": "if",
                "selector": "#title",
                "then": [{"action": "click", "selector": "#gone", "timeout_ms": 200}],
            },
        ),
    )
    assert nested.error_step == 1
    assert (
        nested.error_message
        == "step 1.then.0 (click '#gone'): Timeout 200ms exceeded waiting for selector '#gone'"
    )


async def test_retries_and_failure_artifacts(browser: BrowserHost, actions_site: str) -> None:
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/actions"},
            {"action": "click", "selector": "#gone", "timeout_ms": 100, "retries": 2},
        ),
        trace=True,
    )
    assert out.status == "failed"
    assert sum("failed, retrying" in line.message for line in out.logs) == 2
    names = {a.name: a for a in out.artifacts}
    assert names["failure.png"].data.startswith(b"\x89PNG")
    assert names["trace.zip"].data.startswith(b"PK")


async def test_result_schema_names_the_failing_path(browser: BrowserHost, actions_site: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "prices": {
                "type": "array",
                "items": {"type": "object", "properties": {"Price": {"type": "number"}}},
            }
        },
    }
    steps = [
        {"action": "navigate", "url": f"{actions_site}/actions"},
        {"action": "extract", "name": "prices", "selector": "#prices", "mode": "table"},
    ]
    out = await run(browser, spec(*steps, result_schema=schema))
    assert out.status == "failed"
    assert (
        out.error_message
        == "result does not match result_schema at $.prices[0].Price: '12.50' is not of type 'number'"
    )
    ok = await run(browser, spec(*steps, result_schema={"type": "object", "required": ["prices"]}))
    assert ok.status == "completed", ok.error_message


def test_invalid_steps_are_refused_by_the_contract() -> None:
    bad: list[dict[str, Any]] = [
        {"action": "wait_for"},
        {"action": "wait_for", "delay_ms": 999_999},
        {"action": "select_option", "selector": "#s"},
        {"action": "upload", "selector": "#f", "files": [{"name": "a", "content_base64": "!!"}]},
        {"action": "assert", "text": "x"},
        {"action": "repeat", "next": "#n", "max_iterations": 1000},
        {"action": "teleport"},
    ]
    for step in bad:
        with pytest.raises(ValidationError):
            TaskCreate.model_validate({"steps": [step]})
    with pytest.raises(ValidationError, match="result_schema"):
        TaskCreate.model_validate(
            {"steps": [{"action": "click", "selector": "a"}], "result_schema": {"type": 5}}
        )
    nested = TaskCreate.model_validate(
        {
            "steps": [
                {
                    "action": "if",
                    "selector": "a",
                    "then": [{"action": "fill", "selector": "b", "value": "{{ secrets.X }}"}],
                }
            ]
        }
    )
    assert nested.spec().secret_names() == {"X"}


# --- safe browsing -------------------------------------------------------------------------------------
async def test_internal_addresses_are_blocked_unless_allowed(browser: BrowserHost, actions_site: str) -> None:
    port = actions_site.rsplit(":", 1)[1]
    for url in (
        actions_site + "/actions",  # loopback by address
        f"http://localhost:{port}/actions",  # loopback by a name that resolves there
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.1.2.3/",  # private
        "http://100.64.0.1/",  # CGNAT
    ):
        policy = Policy()
        out = await run(browser, spec({"action": "navigate", "url": url, "timeout_ms": 5000}), policy=policy)
        assert out.status == "failed", url
        assert out.error_message is not None and "navigation blocked" in out.error_message, out.error_message
        assert policy.blocked, url
    assert out.error_message is not None  # (checked in the loop; narrowed here again for mypy)
    assert "loopback" in out.error_message or "CGNAT" in out.error_message


async def test_a_redirect_to_an_internal_host_is_blocked(browser: BrowserHost, actions_site: str) -> None:
    # the first hop is allowed (an allowed domain), the redirect to `localhost` is not
    policy = Policy(allowed_networks=LOCAL, allowed_domains=["127.0.0.1"])
    port = actions_site.rsplit(":", 1)[1]
    out = await run(
        browser,
        spec({"action": "navigate", "url": f"{actions_site}/redirect?to=http://localhost:{port}/actions"}),
        policy=policy,
    )
    assert out.status == "failed"
    assert set(policy.blocked) == {("localhost", "localhost is not in the task's allowed domains")}
    assert out.error_message is not None and "navigation blocked: localhost is not in" in out.error_message


async def test_sub_requests_outside_allowed_domains_are_blocked(
    browser: BrowserHost, actions_site: str
) -> None:
    port = actions_site.rsplit(":", 1)[1]
    policy = Policy(allowed_networks=LOCAL, allowed_domains=["127.0.0.1"])
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/img-elsewhere?src=http://localhost:{port}/x.png"},
            {"action": "extract", "name": "ok", "selector": "#ok"},
        ),
        policy=policy,
    )
    assert out.status == "completed", out.error_message
    assert out.result["blocked"] == [
        {"host": "localhost", "reason": "localhost is not in the task's allowed domains"}
    ]


# --- hostile pages -------------------------------------------------------------------------------------
async def test_dialogs_and_popups_cannot_stall_a_task(browser: BrowserHost, actions_site: str) -> None:
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/hostile"},
            {"action": "extract", "name": "after", "selector": "#after"},
        ),
    )
    assert out.status == "completed", out.error_message
    assert out.result["extracted"]["after"] == "still here"


async def test_a_download_bomb_is_capped(browser: BrowserHost, actions_site: str) -> None:
    out = await run(
        browser,
        spec(
            {"action": "navigate", "url": f"{actions_site}/actions"},
            {"action": "download", "selector": "#bomb", "timeout_ms": 20_000},
        ),
        policy=Policy(allowed_networks=LOCAL, max_bytes=8 * 1024 * 1024),
    )
    assert out.status == "failed"
    assert out.error_message is not None and out.error_message.startswith("step 1 (download '#bomb'): ")
    assert [a.name for a in out.artifacts] == ["failure.png"]  # nothing of the bomb was stored


async def test_a_page_that_never_finishes_loading_is_bounded(browser: BrowserHost, actions_site: str) -> None:
    started = time.monotonic()
    out = await run(
        browser, spec({"action": "navigate", "url": f"{actions_site}/never", "timeout_ms": 1000}), timeout=10
    )
    assert out.status == "failed"
    assert (
        out.error_message
        == f"step 0 (navigate '{actions_site}/never'): Timeout 1000ms exceeded waiting for navigation"
    )
    assert time.monotonic() - started < 30  # a bound on hanging, not a speed claim
