"""The steps runner: executes a TaskSpec's steps in one browser context. No NATS in here.

Secret references stay templates in the spec; a value is substituted only in the argument of the
Playwright call that needs it, and every value is masked out of what the runner returns.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from browserfleet_contracts.tasks import (
    ClickStep,
    ExtractStep,
    FillStep,
    NavigateStep,
    PressStep,
    ScreenshotStep,
    TaskLogLine,
    TaskSpec,
    WaitForStep,
)
from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from .secret_values import Masker, SecretUnavailable, render

log = logging.getLogger(__name__)

DEFAULT_STEP_TIMEOUT_MS = 15_000
MAX_RECORDS = (
    1_000  # rows an `extract` with `fields` returns; a runaway selector must not build a huge result
)
_API_PREFIX = re.compile(r"^[A-Za-z]+\.[A-Za-z_]+: ")
_TIMEOUT = re.compile(r"Timeout (\d+)ms exceeded")

AnyStep = NavigateStep | ClickStep | FillStep | PressStep | WaitForStep | ExtractStep | ScreenshotStep


@dataclass
class Artifact:
    name: str
    content_type: str
    data: bytes


@dataclass
class StepsOutcome:
    status: Literal["completed", "failed"]
    result: dict[str, Any]
    error_message: str | None = None
    error_step: int | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    logs: list[TaskLogLine] = field(default_factory=list)
    execution_time_seconds: float = 0.0


class StepError(Exception):
    """A step failed; `reason` is short and already free of Playwright's call log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe(index: int, step: AnyStep) -> str:
    """`step 3 (click '#go')`, from the template, so it can never carry a secret value."""
    target = step.url if isinstance(step, NavigateStep) else getattr(step, "selector", None)
    if not target:
        return f"step {index} ({step.action})"
    if len(target) > 80:
        target = target[:77] + "..."
    return f"step {index} ({step.action} {target!r})"


def short_reason(exc: BaseException, step: AnyStep) -> str:
    """Playwright's first line without its `Page.click:` prefix and call log."""
    if isinstance(exc, StepError):
        return exc.reason
    text = str(exc).split("Call log:")[0].strip().splitlines()
    first = _API_PREFIX.sub("", text[0].strip()) if text else type(exc).__name__
    timeout = _TIMEOUT.search(first)
    if isinstance(exc, PlaywrightTimeout) or timeout:
        ms = timeout.group(1) if timeout else "?"
        waiting = "navigation" if isinstance(step, NavigateStep) else "selector"
        return f"Timeout {ms}ms exceeded waiting for {waiting}"
    return first.rstrip(".")


class StepsRunner:
    """Runs one task's steps. `secrets` holds the released values by name (empty when none named)."""

    def __init__(
        self,
        spec: TaskSpec,
        secrets: Mapping[str, str] | None = None,
        *,
        timeout_seconds: float | None = None,
    ) -> None:
        self.spec = spec
        self._secrets = dict(secrets or {})
        self._mask = Masker(self._secrets.values())
        self.timeout_seconds = timeout_seconds
        self.extracted: dict[str, Any] = {}
        self.artifacts: list[Artifact] = []
        self.logs: list[TaskLogLine] = []
        self._page: Page | None = None
        self.index = 0  # the step running now; after the loop, how many steps ran

    def _r(self, text: str) -> str:
        return render(text, self._secrets)

    async def run(self, context: BrowserContext) -> StepsOutcome:
        started = time.monotonic()
        error: str | None = None
        error_step: int | None = None
        self._page = await context.new_page()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                for index, step in enumerate(self.spec.steps):
                    self.index = index
                    try:
                        await self._run_step(self._page, step)
                    except (PlaywrightError, StepError, SecretUnavailable) as exc:
                        reason = (
                            short_reason(exc, step) if not isinstance(exc, SecretUnavailable) else str(exc)
                        )
                        message = f"{describe(self.index, step)}: {reason}"
                        if step.optional:
                            self._log("warning", f"{message} (optional, continuing)", self.index)
                            continue
                        error, error_step = message, self.index
                        break
                else:
                    self.index = len(self.spec.steps)
        except TimeoutError:
            error = f"timed out after {self.timeout_seconds:g} s"
            error_step = self.index
        outcome = StepsOutcome(
            status="failed" if error else "completed",
            result=await self.partial_result(),
            error_message=error,
            error_step=error_step,
            artifacts=self.artifacts,
            logs=self.logs,
            execution_time_seconds=round(time.monotonic() - started, 3),
        )
        return self.masked(outcome)

    def masked(self, outcome: StepsOutcome) -> StepsOutcome:
        outcome.result = self._mask.deep(outcome.result)
        if outcome.error_message:
            outcome.error_message = self._mask.text(outcome.error_message)
        for line in outcome.logs:
            line.message = self._mask.text(line.message)
        return outcome

    async def partial_result(self) -> dict[str, Any]:
        """What the steps produced so far (also after a timeout or a cancellation)."""
        url: str | None = None
        title: str | None = None
        if self._page is not None and not self._page.is_closed():
            url = self._page.url
            try:
                title = await asyncio.wait_for(self._page.title(), 5)
            except (PlaywrightError, TimeoutError):
                title = None
        return {"extracted": self.extracted, "steps": self.index, "url": url, "title": title}

    def _log(self, level: Literal["info", "warning", "error"], message: str, step: int | None) -> None:
        self.logs.append(TaskLogLine(level=level, message=self._mask.text(message), step=step))

    async def _run_step(self, page: Page, step: AnyStep) -> None:
        timeout = float(step.timeout_ms or DEFAULT_STEP_TIMEOUT_MS)
        if isinstance(step, NavigateStep):
            response = await page.goto(self._r(step.url), wait_until=step.wait_until, timeout=timeout)
            if response is not None and response.status >= 400:
                self._log("warning", f"navigate got HTTP {response.status}", self.index)
        elif isinstance(step, ClickStep):
            await page.locator(self._r(step.selector)).first.click(timeout=timeout)
        elif isinstance(step, FillStep):
            await page.locator(self._r(step.selector)).first.fill(self._r(step.value), timeout=timeout)
        elif isinstance(step, PressStep):
            await page.locator(self._r(step.selector)).first.press(self._r(step.key), timeout=timeout)
        elif isinstance(step, WaitForStep):
            await page.locator(self._r(step.selector)).first.wait_for(state=step.state, timeout=timeout)
        elif isinstance(step, ExtractStep):
            self.extracted[step.name] = await self._extract(page, step, timeout)
        elif isinstance(step, ScreenshotStep):
            await self._screenshot(page, step, timeout)
        else:  # pragma: no cover - the contract's discriminated union makes this unreachable
            raise StepError(f"unsupported action {step.action!r}")

    async def _extract(self, page: Page, step: ExtractStep, timeout: float) -> Any:
        selector = self._r(step.selector)
        attribute = self._r(step.attribute) if step.attribute else None
        if step.fields is None:
            first = page.locator(selector).first
            if attribute:
                return await first.get_attribute(attribute, timeout=timeout)
            return (await first.inner_text(timeout=timeout)).strip()
        # Records do not wait: zero rows is a valid answer (an empty table), so wait_for first if needed.
        rows = page.locator(selector)
        count = min(await rows.count(), MAX_RECORDS)
        script = (
            "(els, attr) => els.length === 0 ? null"
            " : (attr ? els[0].getAttribute(attr) : (els[0].innerText ?? els[0].textContent).trim())"
        )
        records: list[dict[str, Any]] = []
        for i in range(count):
            row = rows.nth(i)
            record: dict[str, Any] = {}
            for name, sub in step.fields.items():
                record[name] = await row.locator(self._r(sub)).evaluate_all(script, attribute)
            records.append(record)
        return records

    async def _screenshot(self, page: Page, step: ScreenshotStep, timeout: float) -> None:
        if step.selector:
            data = await page.locator(self._r(step.selector)).first.screenshot(timeout=timeout, type="png")
        else:
            data = await page.screenshot(full_page=step.full_page, timeout=timeout, type="png")
        taken = {a.name for a in self.artifacts}
        name, n = f"{step.name}.png", 2
        while name in taken:  # two screenshots with one name must not overwrite each other
            name, n = f"{step.name}-{n}.png", n + 1
        self.artifacts.append(Artifact(name=name, content_type="image/png", data=data))
