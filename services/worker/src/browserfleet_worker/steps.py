"""The steps runner: executes a TaskSpec's steps in one browser context. No NATS in here.

Secret references stay templates in the spec; a value is substituted only in the argument of the
Playwright call that needs it, and every value is masked out of what the runner returns.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from browserfleet_contracts.tasks import (
    MAX_WAIT_DELAY_MS,
    ArtifactSource,
    AssertStep,
    CheckStep,
    ClickStep,
    DblClickStep,
    DownloadStep,
    EvaluateStep,
    ExtractStep,
    FillStep,
    HoverStep,
    IfStep,
    NavigateStep,
    PdfStep,
    PressStep,
    RepeatStep,
    ScreenshotStep,
    ScrollStep,
    SelectOptionStep,
    Step,
    TaskLogLine,
    TaskSpec,
    TypeStep,
    UploadFile,
    UploadStep,
    WaitForStep,
)
from playwright.async_api import BrowserContext, FrameLocator, Locator, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from . import logship
from .netguard import Policy
from .secret_values import Masker, SecretUnavailable, render

log = logging.getLogger(__name__)

DEFAULT_STEP_TIMEOUT_MS = 15_000
DEFAULT_ASSERT_TIMEOUT_MS = 5_000
MAX_RECORDS = 1_000  # rows an `extract` returns; a runaway selector must not build a huge result
# Records from rows whose fields are all native CSS; null when a selector is not (the caller falls back).
_RECORDS_JS = """(rows, [fields, attr, max]) => {
  try {
    return rows.slice(0, max).map(row => {
      const record = {};
      for (const [name, sel] of fields) {
        const el = row.querySelector(sel);
        record[name] = el === null ? null
          : (attr ? el.getAttribute(attr) : (el.innerText ?? el.textContent).trim());
      }
      return record;
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === "SyntaxError") return null;
    throw e;
  }
}"""
MAX_TEXT = 1_000_000  # characters of one extracted text / inner HTML
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
_API_PREFIX = re.compile(r"^[A-Za-z]+\.[A-Za-z_]+: ")
_TIMEOUT = re.compile(r"Timeout (\d+)ms exceeded")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

AnyStep = Step

_TABLE_JS = """(t) => {
  const rows = Array.from(t.querySelectorAll(':scope > thead > tr, :scope > tbody > tr, :scope > tr'));
  if (!rows.length) return [];
  const cells = (r) => Array.from(r.children).map(c => (c.innerText ?? c.textContent ?? '').trim());
  let head = t.querySelector(':scope > thead > tr');
  let body = rows;
  if (head) { body = rows.filter(r => r.parentElement.tagName !== 'THEAD'); }
  else if (rows[0].querySelector('th')) { head = rows[0]; body = rows.slice(1); }
  const names = head ? cells(head).map((n, i) => n || `column_${i + 1}`)
                     : cells(rows[0]).map((_, i) => `column_${i + 1}`);
  return body.slice(0, MAX_RECORDS).map(r => {
    const v = cells(r); const o = {};
    names.forEach((n, i) => { o[n] = i < v.length ? v[i] : null; });
    return o;
  });
}""".replace("MAX_RECORDS", str(MAX_RECORDS))


@dataclass
class Artifact:
    name: str
    content_type: str
    data: bytes


# Reads an earlier task's artifact for an `upload` step: (bytes, content type), or raises StepError. The worker
# supplies one that reads the object store and checks the artifact belongs to the task's own organization.
ArtifactReader = Callable[[ArtifactSource], Awaitable[tuple[bytes, str]]]


@dataclass
class StepsOutcome:
    status: Literal["completed", "failed"]
    result: dict[str, Any]
    error_message: str | None = None
    error_step: int | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    logs: list[TaskLogLine] = field(default_factory=list)
    execution_time_seconds: float = 0.0
    # failed because of the browser (crash, disconnect), not the steps: the scheduler may try again
    retryable: bool = False


class StepError(Exception):
    """A step failed; `reason` is short and already free of Playwright's call log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NestedFailure(StepError):
    """A step inside `if`/`repeat` failed; `reason` is its whole message, naming the nested step."""


def describe(index: int | str, step: AnyStep) -> str:
    """`step 3 (click '#go')`, from the template, so it can never carry a secret value."""
    target = step.url if isinstance(step, NavigateStep) else getattr(step, "selector", None)
    if isinstance(step, EvaluateStep):
        target = step.expression
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
        if isinstance(step, NavigateStep):
            waiting = "navigation"
        elif isinstance(step, DownloadStep):
            waiting = "the download"
        elif isinstance(step, WaitForStep) and step.selector is None:
            waiting = f"url {step.url!r}" if step.url else f"load state {step.load_state}"
        else:
            selector = getattr(step, "selector", None)
            waiting = f"selector {selector!r}" if selector else "selector"
        return f"Timeout {ms}ms exceeded waiting for {waiting}"
    return first.rstrip(".")


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


def schema_errors(schema: dict[str, Any], value: Any) -> str | None:
    """The first mismatch of `value` against a JSON Schema, naming its path (`$.orders[1].total`)."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    err = errors[0]
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return f"result does not match result_schema at {path}: {err.message}"


class StepsRunner:
    """Runs one task's steps. `secrets` holds the released values by name (empty when none named)."""

    def __init__(
        self,
        spec: TaskSpec,
        secrets: Mapping[str, str] | None = None,
        *,
        timeout_seconds: float | None = None,
        policy: Policy | None = None,
        allow_evaluate: bool = False,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        trace_on_failure: bool = True,
        trace_screenshots: bool = False,
    ) -> None:
        self.spec = spec
        self._secrets = dict(secrets or {})
        self._mask = Masker(self._secrets.values())
        self.timeout_seconds = timeout_seconds
        self.policy = policy
        self.allow_evaluate = allow_evaluate
        self.max_download_bytes = max_download_bytes
        self.trace_on_failure = trace_on_failure
        # The trace runs on every task (whether it fails is known only at the end), so it must be cheap:
        # DOM snapshots per action, no screencast unless asked; a failure stores its last screenshot anyway.
        self.trace_screenshots = trace_screenshots
        self.extracted: dict[str, Any] = {}
        self.artifacts: list[Artifact] = []
        self.logs: list[TaskLogLine] = []
        self._page: Page | None = None
        self._accumulate = 0  # > 0 inside a `repeat`: extracts append instead of overwrite
        # for `upload` from an artifact; the worker sets one that reads the object store
        self.artifact_reader: ArtifactReader | None = None
        self.index = 0  # the top-level step running now; after the loop, how many steps ran

    def _r(self, text: str) -> str:
        return render(text, self._secrets)

    async def run(self, context: BrowserContext) -> StepsOutcome:
        started = time.monotonic()
        error: str | None = None
        error_step: int | None = None
        tracing = False
        if self.trace_on_failure:
            try:
                await context.tracing.start(screenshots=self.trace_screenshots, snapshots=True)
                tracing = True
            except PlaywrightError:
                log.debug("tracing unavailable", exc_info=True)
        self._page = await context.new_page()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                for index, step in enumerate(self.spec.steps):
                    self.index = index
                    failure = await self._run_guarded(self._page, step, str(index))
                    if failure is not None:
                        error, error_step = failure, index
                        break
                else:
                    self.index = len(self.spec.steps)
        except TimeoutError:
            error = f"timed out after {self.timeout_seconds:g} s"
            error_step = self.index
        result = await self.partial_result()
        if error is None and self.spec.result_schema is not None:
            error = schema_errors(self.spec.result_schema, self._mask.deep(self.extracted))
        if error is not None:
            await self._failure_artifacts(context, tracing)
        elif tracing:
            await _bounded(context.tracing.stop())
        outcome = StepsOutcome(
            status="failed" if error else "completed",
            result=result,
            error_message=error,
            error_step=error_step,
            artifacts=self.artifacts,
            logs=self.logs,
            execution_time_seconds=round(time.monotonic() - started, 3),
        )
        return self.masked(outcome)

    async def _failure_artifacts(self, context: BrowserContext, tracing: bool) -> None:
        """The last screenshot and a Playwright trace, for whoever debugs the failure."""
        page = self._page
        if page is not None and not page.is_closed():
            data = await _bounded(page.screenshot(timeout=5_000, type="png"))
            if isinstance(data, bytes):
                self._add_artifact("failure.png", "image/png", data)
        if tracing:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "trace.zip"
                await _bounded(context.tracing.stop(path=str(path)), 20)
                if path.is_file() and path.stat().st_size <= self.max_download_bytes:
                    self._add_artifact("trace.zip", "application/zip", path.read_bytes())

    async def _run_guarded(self, page: Page, step: AnyStep, label: str) -> str | None:
        """Runs one step with its retries; the failure message, or None (also for an optional failure)."""
        last: BaseException | None = None
        self._log("info", describe(label, step), self.index)  # followable progress, masked like the rest
        for attempt in range(step.retries + 1):
            try:
                await self._run_step(page, step, label)
                return None
            except (PlaywrightError, StepError, SecretUnavailable) as exc:
                last = exc
                if isinstance(exc, SecretUnavailable):
                    break
                if attempt < step.retries:
                    self._log("info", f"{describe(label, step)} failed, retrying", self.index)
                    await asyncio.sleep(min(0.25 * (attempt + 1), 2))
        assert last is not None
        if isinstance(last, NestedFailure):
            message = last.reason
        else:
            reason = str(last) if isinstance(last, SecretUnavailable) else short_reason(last, step)
            message = f"{describe(label, step)}: {reason}"
        if step.optional:
            self._log("warning", f"{message} (optional, continuing)", self.index)
            return None
        return message

    async def _run_steps(self, page: Page, steps: Sequence[AnyStep], label: str) -> None:
        for i, step in enumerate(steps):
            failure = await self._run_guarded(page, step, f"{label}.{i}")
            if failure is not None:
                raise NestedFailure(failure)

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
        result: dict[str, Any] = {
            "extracted": self.extracted,
            "steps": self.index,
            "url": url,
            "title": title,
        }
        if self.policy is not None and self.policy.blocked:
            result["blocked"] = [{"host": h, "reason": r} for h, r in self.policy.blocked[:50]]
        return result

    def _log(self, level: Literal["info", "warning", "error"], message: str, step: int | None) -> None:
        line = TaskLogLine(level=level, message=self._mask.text(message), step=step, at=datetime.now(UTC))
        self.logs.append(logship.emit(line))

    def _loc(self, page: Page, step: AnyStep, selector: str) -> Locator:
        root: Page | FrameLocator = page
        if step.frame:
            root = page.frame_locator(self._r(step.frame)).first
        return root.locator(self._r(selector))

    def _store(self, name: str, value: Any) -> None:
        if self._accumulate and name in self.extracted:
            prev = self.extracted[name]
            if isinstance(prev, list) and isinstance(value, list):
                prev.extend(value[: max(0, MAX_RECORDS * 10 - len(prev))])
                return
            self.extracted[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
            return
        self.extracted[name] = value

    async def _run_step(self, page: Page, step: AnyStep, label: str) -> None:
        timeout = float(step.timeout_ms or DEFAULT_STEP_TIMEOUT_MS)
        if isinstance(step, NavigateStep):
            await self._navigate(page, step, timeout)
        elif isinstance(step, ClickStep):
            await self._loc(page, step, step.selector).first.click(timeout=timeout)
        elif isinstance(step, DblClickStep):
            await self._loc(page, step, step.selector).first.dblclick(timeout=timeout)
        elif isinstance(step, HoverStep):
            await self._loc(page, step, step.selector).first.hover(timeout=timeout)
        elif isinstance(step, FillStep):
            await self._loc(page, step, step.selector).first.fill(self._r(step.value), timeout=timeout)
        elif isinstance(step, TypeStep):
            await self._loc(page, step, step.selector).first.press_sequentially(
                self._r(step.text), delay=step.delay_ms, timeout=timeout
            )
        elif isinstance(step, PressStep):
            await self._loc(page, step, step.selector).first.press(self._r(step.key), timeout=timeout)
        elif isinstance(step, SelectOptionStep):
            loc = self._loc(page, step, step.selector).first
            if step.values:
                await loc.select_option(value=[self._r(v) for v in step.values], timeout=timeout)
            else:
                await loc.select_option(label=[self._r(v) for v in step.labels], timeout=timeout)
        elif isinstance(step, CheckStep):
            loc = self._loc(page, step, step.selector).first
            await (loc.check if step.action == "check" else loc.uncheck)(timeout=timeout)
        elif isinstance(step, UploadStep):
            files = [await self._upload_file(f) for f in step.files]
            await self._loc(page, step, step.selector).first.set_input_files(files, timeout=timeout)
        elif isinstance(step, ScrollStep):
            if step.selector:
                await self._loc(page, step, step.selector).first.scroll_into_view_if_needed(timeout=timeout)
            else:
                await page.evaluate("([x, y]) => window.scrollBy(x, y)", [step.x, step.y])
        elif isinstance(step, WaitForStep):
            await self._wait_for(page, step, timeout)
        elif isinstance(step, AssertStep):
            await self._assert(page, step)
        elif isinstance(step, ExtractStep):
            self._store(step.name, await self._extract(page, step, timeout))
        elif isinstance(step, ScreenshotStep):
            if step.selector:
                data = await self._loc(page, step, step.selector).first.screenshot(
                    timeout=timeout, type="png"
                )
            else:
                data = await page.screenshot(full_page=step.full_page, timeout=timeout, type="png")
            self._add_artifact(f"{step.name}.png", "image/png", data)
        elif isinstance(step, PdfStep):
            data = await asyncio.wait_for(page.pdf(), timeout / 1000)
            self._add_artifact(f"{step.name}.pdf", "application/pdf", data)
        elif isinstance(step, DownloadStep):
            await self._download(page, step, timeout)
        elif isinstance(step, EvaluateStep):
            if not self.allow_evaluate:
                raise StepError("evaluate is not allowed for this organization")
            value = await asyncio.wait_for(page.evaluate(self._r(step.expression)), timeout / 1000)
            if step.name:
                self._store(step.name, json.loads(json.dumps(value, default=str)))
        elif isinstance(step, IfStep):
            present = await self._present(page, step, timeout if step.timeout_ms else 0)
            branch, name = (step.then, "then") if present else (step.otherwise, "otherwise")
            await self._run_steps(page, branch, f"{label}.{name}")
        elif isinstance(step, RepeatStep):
            await self._repeat(page, step, label, timeout)
        else:  # pragma: no cover - the contract's discriminated union makes this unreachable
            raise StepError(f"unsupported action {step.action!r}")

    async def _upload_file(self, f: UploadFile) -> Any:
        if f.artifact is None:
            assert f.content_base64 is not None and f.name is not None  # the contract requires them
            return {
                "name": f.name,
                "mimeType": f.mime_type or "application/octet-stream",
                "buffer": base64.b64decode(f.content_base64),
            }
        if self.artifact_reader is None:
            raise StepError("uploading an artifact is not available here")
        data, content_type = await self.artifact_reader(f.artifact)
        return {
            "name": f.name or f.artifact.name,
            "mimeType": f.mime_type or content_type or "application/octet-stream",
            "buffer": data,
        }

    async def _navigate(self, page: Page, step: NavigateStep, timeout: float) -> None:
        seen = len(self.policy.blocked) if self.policy else 0
        try:
            response = await page.goto(self._r(step.url), wait_until=step.wait_until, timeout=timeout)
        except PlaywrightError:
            self._raise_if_blocked(seen)
            raise
        if response is not None and response.status == 403:
            self._raise_if_blocked(seen)
        if response is not None and response.status >= 400:
            self._log("warning", f"navigate got HTTP {response.status}", self.index)

    def _raise_if_blocked(self, seen: int) -> None:
        if self.policy is not None and len(self.policy.blocked) > seen:
            _host, reason = self.policy.blocked[seen]
            raise StepError(f"navigation blocked: {reason}")

    async def _present(self, page: Page, step: IfStep, timeout: float) -> bool:
        loc = self._loc(page, step, step.selector)
        if timeout:
            try:
                await loc.first.wait_for(state="attached", timeout=timeout)
            except PlaywrightTimeout:
                return False
            return True
        return await loc.count() > 0

    async def _repeat(self, page: Page, step: RepeatStep, label: str, timeout: float) -> None:
        self._accumulate += 1
        try:
            for i in range(step.max_iterations):
                await self._run_steps(page, step.steps, f"{label}.{i}")
                nxt = self._loc(page, step, step.next).first
                if await nxt.count() == 0 or not await nxt.is_visible() or not await nxt.is_enabled():
                    return
                if i == step.max_iterations - 1:
                    self._log(
                        "warning", f"repeat stopped at max_iterations={step.max_iterations}", self.index
                    )
                    return
                await nxt.click(timeout=timeout)
                await page.wait_for_load_state("load", timeout=timeout)
        finally:
            self._accumulate -= 1

    async def _wait_for(self, page: Page, step: WaitForStep, timeout: float) -> None:
        if step.selector is not None:
            await self._loc(page, step, step.selector).first.wait_for(state=step.state, timeout=timeout)
        elif step.url is not None:
            await page.wait_for_url(url_pattern(self._r(step.url)), timeout=timeout)
        elif step.load_state is not None:
            await page.wait_for_load_state(step.load_state, timeout=timeout)
        elif step.delay_ms is not None:
            await asyncio.sleep(min(step.delay_ms, MAX_WAIT_DELAY_MS) / 1000)

    async def _assert(self, page: Page, step: AssertStep) -> None:
        """Conditions get `timeout_ms` (default 5 s) to become true, like a user watching the page."""
        deadline = time.monotonic() + (step.timeout_ms or DEFAULT_ASSERT_TIMEOUT_MS) / 1000
        while True:
            problem = await self._assert_once(page, step)
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise StepError(f"assertion failed: {step.message or problem}")
            await asyncio.sleep(0.1)

    async def _assert_once(self, page: Page, step: AssertStep) -> str | None:
        if step.url is not None and not url_pattern(self._r(step.url)).fullmatch(page.url):
            return f"url is {page.url!r}, expected {step.url!r}"
        if step.selector is None:
            return None
        loc = self._loc(page, step, step.selector)
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
            if self._r(step.text) not in actual:
                shown = actual if len(actual) <= 80 else actual[:77] + "..."
                return f"{step.selector!r} text is {shown!r}, expected it to contain {step.text!r}"
        if step.count is None and step.visible is None and step.text is None and count == 0:
            return f"{step.selector!r} matched nothing"
        return None

    async def _extract(self, page: Page, step: ExtractStep, timeout: float) -> Any:
        selector = step.selector
        attribute = self._r(step.attribute) if step.attribute else None
        if step.fields is not None:
            return await self._records(page, step, attribute)
        if step.mode == "all":
            values = await self._loc(page, step, selector).evaluate_all(
                "(els, attr) => els.map(e => attr ? e.getAttribute(attr)"
                " : (e.innerText ?? e.textContent ?? '').trim())",
                attribute,
            )
            return list(values)[:MAX_RECORDS]
        first = self._loc(page, step, selector).first
        if step.mode == "table":
            return await first.evaluate(_TABLE_JS, timeout=timeout)
        if step.mode == "inner_html":
            return str(await first.inner_html(timeout=timeout))[:MAX_TEXT]
        if attribute:
            return await first.get_attribute(attribute, timeout=timeout)
        return (await first.inner_text(timeout=timeout)).strip()[:MAX_TEXT]

    async def _records(self, page: Page, step: ExtractStep, attribute: str | None) -> list[dict[str, Any]]:
        # Records do not wait: zero rows is a valid answer (an empty table), so wait_for first if needed.
        assert step.fields is not None
        rows = self._loc(page, step, step.selector)
        fields = [(name, self._r(sub)) for name, sub in step.fields.items()]
        # One round trip for the whole table when every field is plain CSS and matches (the usual case);
        # a Playwright-only selector (text=, role=, xpath, :has-text, >>) or a miss, possibly in a shadow
        # root that only Playwright's engine pierces, takes the per-row path with its exact semantics.
        fast = await rows.evaluate_all(_RECORDS_JS, [fields, attribute, MAX_RECORDS])
        if fast is not None and all(v is not None for record in fast for v in record.values()):
            return list(fast)
        count = min(await rows.count(), MAX_RECORDS)
        script = (
            "(els, attr) => els.length === 0 ? null"
            " : (attr ? els[0].getAttribute(attr) : (els[0].innerText ?? els[0].textContent).trim())"
        )
        records: list[dict[str, Any]] = []
        for i in range(count):
            row = rows.nth(i)
            record: dict[str, Any] = {}
            for name, sub in fields:
                record[name] = await row.locator(sub).evaluate_all(script, attribute)
            records.append(record)
        return records

    async def _download(self, page: Page, step: DownloadStep, timeout: float) -> None:
        async with page.expect_download(timeout=timeout) as info:
            await self._loc(page, step, step.selector).first.click(timeout=timeout)
        download = await info.value
        try:
            path = await asyncio.wait_for(download.path(), timeout / 1000)
        except TimeoutError:
            await download.cancel()
            raise StepError(f"the download did not finish within {timeout:g} ms") from None
        failure = await download.failure()
        if failure:
            raise StepError(f"the download failed: {failure}")
        size = await asyncio.to_thread(os.path.getsize, path)
        if size > self.max_download_bytes:
            await download.delete()
            raise StepError(f"the download is {size} bytes, over the limit of {self.max_download_bytes}")
        name = step.name or _SAFE_NAME.sub("_", download.suggested_filename).strip("._") or "download"
        data = await asyncio.to_thread(Path(path).read_bytes)
        await download.delete()
        self._add_artifact(name, _content_type(name), data)

    def _add_artifact(self, name: str, content_type: str, data: bytes) -> None:
        taken = {a.name for a in self.artifacts}
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        candidate, n = name, 2
        while candidate in taken:  # two artifacts with one name must not overwrite each other
            candidate = f"{stem}-{n}{dot}{ext}"
            n += 1
        self.artifacts.append(Artifact(name=candidate, content_type=content_type, data=data))


def _content_type(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def _bounded(aw: Any, seconds: float = 10) -> Any:
    try:
        return await asyncio.wait_for(aw, seconds)
    except (PlaywrightError, TimeoutError):
        log.debug("a bounded browser call failed", exc_info=True)
        return None
