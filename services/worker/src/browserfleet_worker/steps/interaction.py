"""Actions on the page like a user's: navigate, click, fill, type, press, select, check, upload, scroll, wait for,
and assert (which watches the page until its conditions hold)."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import TYPE_CHECKING, Any

from browserfleet_contracts.steps import (
    MAX_WAIT_DELAY_MS,
    AssertStep,
    CheckStep,
    ClickStep,
    DblClickStep,
    FillStep,
    HoverStep,
    NavigateStep,
    PressStep,
    ScrollStep,
    SelectOptionStep,
    TypeStep,
    UploadFile,
    UploadStep,
    WaitForStep,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from .outcome import StepError

if TYPE_CHECKING:
    from .runner import Action, StepsRunner

DEFAULT_ASSERT_TIMEOUT_MS = 5_000


def url_pattern(pattern: str) -> re.Pattern[str]:
    """A URL glob (`**/orders?page=*`) or an exact URL, as a regex matching the whole URL."""
    if "*" not in pattern:
        return re.compile(re.escape(pattern) + r"/?")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


async def navigate(rn: StepsRunner, page: Page, step: NavigateStep, _label: str, timeout: float) -> None:
    seen = len(rn.policy.blocked) if rn.policy else 0
    try:
        response = await page.goto(rn.render(step.url), wait_until=step.wait_until, timeout=timeout)
    except PlaywrightError:
        _raise_if_blocked(rn, seen)
        raise
    if response is not None and response.status == 403:
        _raise_if_blocked(rn, seen)
    if response is not None and response.status >= 400:
        rn.log_line("warning", f"navigate got HTTP {response.status}")


def _raise_if_blocked(rn: StepsRunner, seen: int) -> None:
    """Safe browsing refused the navigation (a failed goto or a 403): name its reason instead."""
    if rn.policy is not None and len(rn.policy.blocked) > seen:
        _host, reason = rn.policy.blocked[seen]
        raise StepError(f"navigation blocked: {reason}")


async def click(rn: StepsRunner, page: Page, step: ClickStep, _label: str, timeout: float) -> None:
    await rn.locate(page, step, step.selector).first.click(timeout=timeout)


async def dblclick(rn: StepsRunner, page: Page, step: DblClickStep, _label: str, timeout: float) -> None:
    await rn.locate(page, step, step.selector).first.dblclick(timeout=timeout)


async def hover(rn: StepsRunner, page: Page, step: HoverStep, _label: str, timeout: float) -> None:
    await rn.locate(page, step, step.selector).first.hover(timeout=timeout)


async def fill(rn: StepsRunner, page: Page, step: FillStep, _label: str, timeout: float) -> None:
    target = rn.locate(page, step, step.selector)
    rn.holds_secret(target, step.value)  # before typing: a half-typed secret is masked too
    await target.first.fill(rn.render(step.value), timeout=timeout)


async def type_text(rn: StepsRunner, page: Page, step: TypeStep, _label: str, timeout: float) -> None:
    target = rn.locate(page, step, step.selector)
    rn.holds_secret(target, step.text)
    await target.first.press_sequentially(rn.render(step.text), delay=step.delay_ms, timeout=timeout)


async def press(rn: StepsRunner, page: Page, step: PressStep, _label: str, timeout: float) -> None:
    target = rn.locate(page, step, step.selector)
    rn.holds_secret(target, step.key)
    await target.first.press(rn.render(step.key), timeout=timeout)


async def select_option(
    rn: StepsRunner, page: Page, step: SelectOptionStep, _label: str, timeout: float
) -> None:
    loc = rn.locate(page, step, step.selector).first
    if step.values:
        await loc.select_option(value=[rn.render(v) for v in step.values], timeout=timeout)
    else:
        await loc.select_option(label=[rn.render(v) for v in step.labels], timeout=timeout)


async def check(rn: StepsRunner, page: Page, step: CheckStep, _label: str, timeout: float) -> None:
    loc = rn.locate(page, step, step.selector).first
    await (loc.check if step.action == "check" else loc.uncheck)(timeout=timeout)


async def upload(rn: StepsRunner, page: Page, step: UploadStep, _label: str, timeout: float) -> None:
    files = [await _upload_file(rn, f) for f in step.files]
    await rn.locate(page, step, step.selector).first.set_input_files(files, timeout=timeout)


async def _upload_file(rn: StepsRunner, f: UploadFile) -> Any:
    if f.artifact is None:
        assert f.content_base64 is not None and f.name is not None  # the contract requires them
        return {
            "name": f.name,
            "mimeType": f.mime_type or "application/octet-stream",
            "buffer": base64.b64decode(f.content_base64),
        }
    if rn.artifact_reader is None:
        raise StepError("uploading an artifact is not available here")
    data, content_type = await rn.artifact_reader(f.artifact)
    return {
        "name": f.name or f.artifact.name,
        "mimeType": f.mime_type or content_type or "application/octet-stream",
        "buffer": data,
    }


async def scroll(rn: StepsRunner, page: Page, step: ScrollStep, _label: str, timeout: float) -> None:
    if step.selector:
        await rn.locate(page, step, step.selector).first.scroll_into_view_if_needed(timeout=timeout)
    else:
        await page.evaluate("([x, y]) => window.scrollBy(x, y)", [step.x, step.y])


async def wait_for(rn: StepsRunner, page: Page, step: WaitForStep, _label: str, timeout: float) -> None:
    if step.selector is not None:
        await rn.locate(page, step, step.selector).first.wait_for(state=step.state, timeout=timeout)
    elif step.url is not None:
        await page.wait_for_url(url_pattern(rn.render(step.url)), timeout=timeout)
    elif step.load_state is not None:
        await page.wait_for_load_state(step.load_state, timeout=timeout)
    elif step.delay_ms is not None:
        await asyncio.sleep(min(step.delay_ms, MAX_WAIT_DELAY_MS) / 1000)


async def assert_(rn: StepsRunner, page: Page, step: AssertStep, _label: str, _timeout: float) -> None:
    """Conditions get `timeout_ms` (default 5 s) to become true, like a user watching the page."""
    deadline = time.monotonic() + (step.timeout_ms or DEFAULT_ASSERT_TIMEOUT_MS) / 1000
    while True:
        problem = await _assert_once(rn, page, step)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise StepError(f"assertion failed: {step.message or problem}")
        await asyncio.sleep(0.1)


async def _assert_once(rn: StepsRunner, page: Page, step: AssertStep) -> str | None:
    if step.url is not None and not url_pattern(rn.render(step.url)).fullmatch(page.url):
        return f"url is {page.url!r}, expected {step.url!r}"
    if step.selector is None:
        return None
    loc = rn.locate(page, step, step.selector)
    count = await loc.count()
    if step.count is not None and count != step.count:
        return f"{step.selector!r} matched {count} element(s), expected {step.count}"
    if step.visible is not None:
        visible = count > 0 and await loc.first.is_visible()
        if visible != step.visible:
            return f"{step.selector!r} is {'' if visible else 'not '}visible"
    if step.text is not None:
        if count == 0:
            return f"{step.selector!r} matched nothing"
        actual = (await loc.first.inner_text(timeout=1_000)).strip()
        if rn.render(step.text) not in actual:
            shown = actual if len(actual) <= 80 else actual[:77] + "..."
            return f"{step.selector!r} text is {shown!r}, expected it to contain {step.text!r}"
    if step.count is None and step.visible is None and step.text is None and count == 0:
        return f"{step.selector!r} matched nothing"
    return None


ACTIONS: dict[type[Any], Action] = {
    NavigateStep: navigate,
    ClickStep: click,
    DblClickStep: dblclick,
    HoverStep: hover,
    FillStep: fill,
    TypeStep: type_text,
    PressStep: press,
    SelectOptionStep: select_option,
    CheckStep: check,
    UploadStep: upload,
    ScrollStep: scroll,
    WaitForStep: wait_for,
    AssertStep: assert_,
}
