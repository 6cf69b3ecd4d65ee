"""The steps runner: runs a TaskSpec's steps in one browser context, each with its retries, under the task's
timeout; what it returns is masked. The actions themselves live by concern: interaction.py, extraction.py,
capture.py and control.py, each with its ACTIONS table."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from browserfleet_contracts.secret_refs import SECRET_REF
from browserfleet_contracts.steps import Step
from browserfleet_contracts.tasks import TaskLogLine, TaskSpec
from playwright.async_api import BrowserContext, FrameLocator, Locator, Page
from playwright.async_api import Error as PlaywrightError

from .. import logship, netlog
from ..artifact_guard import TRACE_NAME, scrub_trace, withhold
from ..browser import TraceOptions, start_recording, take_trace, task_page
from ..netguard import Policy
from ..secret_forms import MIN_CHARS, SecretScanner
from ..secret_values import Masker, SecretUnavailable, render
from . import capture, control, extraction, interaction
from .capture import MAX_DOWNLOAD_BYTES
from .extraction import MAX_RECORDS
from .outcome import (
    Artifact,
    ArtifactReader,
    NestedFailure,
    StepError,
    StepsOutcome,
    describe,
    schema_errors,
    short_reason,
    where,
)

log = logging.getLogger(__name__)

DEFAULT_STEP_TIMEOUT_MS = 15_000
# a failed page that does not let its DOM recording start (hung renderer) keeps its trace without it
FAILURE_DOM_START_SECONDS = 10.0
# the network log (TRACE_SNAPSHOTS=failure) the driver does not write within this is left out of the trace
NETWORK_LOG_SECONDS = 10.0
# for a PDF (no mask option there): an input holding a secret draws discs meanwhile, as a password input does
_TEXT_SECURITY = "-webkit-text-security"
_HIDE_JS = """els => els.map(e => {
  const was = [e.style.getPropertyValue('%s'), e.style.getPropertyPriority('%s')];
  e.style.setProperty('%s', 'disc', 'important');
  return was;
})""" % ((_TEXT_SECURITY,) * 3)
_UNHIDE_JS = """(els, was) => els.forEach((e, i) => {
  if (i >= was.length) return;
  if (was[i][0]) e.style.setProperty('%s', was[i][0], was[i][1]); else e.style.removeProperty('%s');
})""" % ((_TEXT_SECURITY,) * 2)

# One action's code: (runner, page, step, label, timeout in ms); it raises to fail the step.
Action = Callable[["StepsRunner", Page, Any, str, float], Awaitable[None]]
ACTIONS: dict[type[Any], Action] = {
    **interaction.ACTIONS,
    **extraction.ACTIONS,
    **capture.ACTIONS,
    **control.ACTIONS,
}


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
        trace_snapshots: bool | Literal["failure"] = "failure",
        trace_on_success: bool = False,
    ) -> None:
        self.spec = spec
        self._secrets = dict(secrets or {})
        self._mask = Masker(self._secrets.values())
        self._scanner = SecretScanner(self._secrets)
        # elements a step typed a secret into (by locator, so they are found again after a re-render)
        self._secret_inputs: dict[str, Locator] = {}
        self.timeout_seconds = timeout_seconds
        self.policy = policy
        self.allow_evaluate = allow_evaluate
        self.max_download_bytes = max_download_bytes
        # trace_on_failure: this task records a trace and keeps it when it fails; trace_on_success: also
        # when it completes (TRACE_MODE=on)
        self.trace_on_failure = trace_on_failure
        self.trace_on_success = trace_on_success and trace_on_failure
        # The trace runs on every task (whether it fails is known only at the end), so it must be cheap: DOM
        # snapshots only when TRACE_SNAPSHOTS is true (the network log is recorded beside the trace when it is
        # failure), no screencast unless TRACE_SCREENSHOTS asks; a failure stores its last screenshot anyway.
        # Never a screencast with secrets: its frames show what was typed and cannot be scrubbed.
        self.trace_screenshots = trace_screenshots and not self._secrets
        self.trace_snapshots = trace_snapshots is True
        # TRACE_SNAPSHOTS=failure: no snapshot while the steps run, the failed page's DOM recorded at the end and
        # the network log recorded beside the trace (netlog.py) added to it
        self.failure_snapshot = trace_snapshots == "failure"
        self.extracted: dict[str, Any] = {}
        self.artifacts: list[Artifact] = []
        self.logs: list[TaskLogLine] = []
        self._page: Page | None = None
        self.accumulate = 0  # > 0 inside a `repeat`: extracts append instead of overwrite
        # for `upload` from an artifact; the worker sets one that reads the object store
        self.artifact_reader: ArtifactReader | None = None
        # for `handoff`: waits until a person watching live presses continue (False: nobody did in time)
        self.handoff: Callable[[str, float], Awaitable[bool]] | None = None
        self.index = 0  # the top-level step running now; after the loop, how many steps ran

    def render(self, text: str) -> str:
        """`text` with its secret references substituted: only for the Playwright call that needs it."""
        return render(text, self._secrets)

    async def run(self, context: BrowserContext) -> StepsOutcome:
        started = time.monotonic()
        error: str | None = None
        error_step: int | None = None
        timed_out = False
        tracing = await self._start_trace(context)
        self._page = await task_page(context)
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
            timed_out = True
        result = await self.partial_result()
        if error is None and self.spec.result_schema is not None:
            error = schema_errors(self.spec.result_schema, self._mask.deep(self.extracted))
        if error is not None:
            await self._failure_artifacts(context, tracing)
        elif tracing and self.trace_on_success:
            await self._keep_trace(context)
        elif tracing:
            # a success's recording is not stopped: its context closes next, which discards it (the driver
            # aborts a context's tracing on close) without a round trip on the task's path
            forget_recording(context)
        await self._withhold_secret_artifacts(result)
        outcome = StepsOutcome(
            status="timed_out" if timed_out else "failed" if error else "completed",
            result=result,
            error_message=error,
            error_step=error_step,
            artifacts=self.artifacts,
            logs=self.logs,
            execution_time_seconds=round(time.monotonic() - started, 3),
        )
        return self.masked(outcome)

    def trace_options(self) -> TraceOptions | None:
        """How this task's trace records; None: no trace (off, or a value this short cannot be scrubbed out of
        a trace without destroying it)."""
        if not self.trace_on_failure or self._scanner.short:
            return None
        return TraceOptions(
            screenshots=self.trace_screenshots, snapshots=self.trace_snapshots, network=self.failure_snapshot
        )

    async def _start_trace(self, context: BrowserContext) -> bool:
        """The trace recording from here on: the one the context was prepared with when it records as this task
        wants (no round trip), else one started now; a prepared recording the task must not have (its options
        differ, e.g. a screencast with secrets, or no trace) is stopped, unsaved, before any step."""
        want, have = self.trace_options(), take_trace(context)
        if have is not None and have == want:
            return True
        try:
            if have is not None:
                await context.tracing.stop()
            if want is not None:
                await start_recording(context, want)
                return True
        except PlaywrightError:
            log.debug("tracing unavailable", exc_info=True)
        return False

    async def _failure_artifacts(self, context: BrowserContext, tracing: bool) -> None:
        """The last screenshot and a Playwright trace, for whoever debugs the failure."""
        if self.trace_on_failure and self._scanner.short:
            names = ", ".join(self._scanner.short)
            self.log_line("warning", f"no {TRACE_NAME} kept: secret {names} is under {MIN_CHARS} characters")
        if tracing:
            await self._keep_trace(context, failure=True)
        else:
            await self._failure_screenshot()

    async def _failure_screenshot(self) -> None:
        page = self._page
        if page is not None and not page.is_closed():
            shot = page.screenshot(timeout=5_000, type="png", mask=self.secret_masks())
            data = await _bounded(shot)
            if isinstance(data, bytes):
                self.add_artifact("failure.png", "image/png", data)

    async def _keep_trace(self, context: BrowserContext, *, failure: bool = False) -> None:
        """The recording saved as the task's trace artifact (scrubbed of its secrets); a failure's screenshot
        is taken while it still records (its action then holds the failed page's DOM snapshots), or, with
        TRACE_SNAPSHOTS=failure, in a second recording that takes only those, and the network log recorded
        beside the trace becomes the trace's own (netlog.py)."""
        if failure:
            netlog.hold(context)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / TRACE_NAME
            page_dom: Path | None = None
            if failure and not self.failure_snapshot:
                await self._failure_screenshot()
            await _bounded(context.tracing.stop(path=str(path)), 20)
            if failure and self.failure_snapshot:
                page_dom = await self._failure_dom(context, Path(tmp) / "failure.zip")
            network = await self._network_log(context)
            if not path.is_file() or path.stat().st_size > self.max_download_bytes:
                return
            trace: bytes | None = path.read_bytes()
            second = page_dom.read_bytes() if page_dom is not None and page_dom.is_file() else None
            if trace is not None and (second is not None or network is not None):
                try:
                    trace = await asyncio.to_thread(merge_traces, trace, second, network)
                except (zipfile.BadZipFile, OSError, ValueError):
                    log.warning("the failure's DOM recording could not be added to its trace")
        if trace is None or len(trace) > self.max_download_bytes:
            return
        if self._scanner:
            trace, report = await asyncio.to_thread(scrub_trace, trace, self._scanner)
            if report.dropped:
                self.log_line(
                    "warning",
                    f"{TRACE_NAME}: {len(report.dropped)} entries left out, they held a secret value that "
                    "could not be scrubbed (compressed content)",
                )
        if trace is not None:
            self.add_artifact(TRACE_NAME, "application/zip", trace)

    async def _network_log(self, context: BrowserContext) -> bytes | None:
        """The task's network log as a trace's network file, when one was recorded beside the trace (netlog.py);
        bounded in time like every failure artifact (NETWORK_LOG_SECONDS) and in size (the latest requests of
        a page that sent more are kept, and the log says so)."""
        if not self.failure_snapshot or not netlog.running(context):
            return None
        try:
            hars, dropped = await asyncio.wait_for(netlog.export(context), NETWORK_LOG_SECONDS)
            if not hars:
                return None
            lines, cut = await asyncio.to_thread(netlog.trace_network, hars)
            cut |= dropped
        except (PlaywrightError, TimeoutError, OSError, ValueError, KeyError, TypeError):
            log.debug("the network log could not be read", exc_info=True)
            self.log_line("warning", f"{TRACE_NAME}: no network log, it could not be written in time")
            return None
        if cut:
            mib = netlog.MAX_NETWORK_LOG_BYTES // (1024 * 1024)
            self.log_line("warning", f"{TRACE_NAME}: the network log keeps the latest {mib} MiB of requests")
        return lines

    async def _failure_dom(self, context: BrowserContext, path: Path) -> Path | None:
        """The failure screenshot taken in a recording with DOM snapshots (Playwright snapshots the page before
        and after a screenshot), saved at `path` (no file there when saving failed): the page as the failure
        left it, recorded only when a task failed. None when that recording could not start (the screenshot
        is taken all the same)."""
        try:
            await asyncio.wait_for(
                start_recording(context, TraceOptions(screenshots=False, snapshots=True)),
                FAILURE_DOM_START_SECONDS,
            )
        except (PlaywrightError, TimeoutError):
            log.debug("the failure's DOM recording could not start", exc_info=True)
            await self._failure_screenshot()
            return None
        await self._failure_screenshot()
        await _bounded(context.tracing.stop(path=str(path)), 20)
        return path

    async def _withhold_secret_artifacts(self, result: dict[str, Any]) -> None:
        """Every artifact is searched for the secrets' forms before it may be stored; one holding any (a
        download or page the site filled with a secret, say) is left out, and the log and result say so."""
        if not self._scanner or not self.artifacts:
            return
        names = [a.name for a in self.artifacts]
        self.artifacts, notes = await asyncio.to_thread(withhold, self.artifacts, self._scanner)
        for note in notes:
            self.log_line("warning", note)
        kept = {a.name for a in self.artifacts}
        withheld = [name for name in names if name not in kept]
        if withheld:
            result["withheld_artifacts"] = withheld

    def holds_secret(self, target: Locator, template: str) -> None:
        """`target` is about to receive `template` rendered: when that carries a secret, every screenshot
        masks the element and a PDF draws its text as discs."""
        if SECRET_REF.search(template):
            self._secret_inputs.setdefault(repr(target), target)

    def secret_masks(self) -> list[Locator]:
        """For a screenshot's `mask`: the elements a secret was typed into."""
        return list(self._secret_inputs.values())

    @contextlib.asynccontextmanager
    async def secrets_hidden(self, timeout: float) -> AsyncIterator[None]:
        """Inputs holding a secret draw it as discs while the block runs (a PDF is of the page itself)."""
        hidden: list[tuple[Locator, Any]] = []
        try:
            for target in self._secret_inputs.values():
                try:
                    was = await asyncio.wait_for(target.evaluate_all(_HIDE_JS), timeout / 1000)
                except (PlaywrightError, TimeoutError):
                    raise StepError("an input holding a secret could not be hidden from the PDF") from None
                hidden.append((target, was))
            yield
        finally:
            for target, was in hidden:
                await _bounded(target.evaluate_all(_UNHIDE_JS, was), 5)

    async def _run_guarded(self, page: Page, step: Step, label: str) -> str | None:
        """Runs one step with its retries; the failure message, or None (also for an optional failure)."""
        last: BaseException | None = None
        self.log_line("info", describe(label, step))  # followable progress, masked like the rest
        for attempt in range(step.retries + 1):
            try:
                await self._run_step(page, step, label)
                return None
            except (PlaywrightError, StepError, SecretUnavailable) as exc:
                last = exc
                if isinstance(exc, SecretUnavailable):
                    break
                if attempt < step.retries:
                    self.log_line("info", f"{describe(label, step)} failed, retrying")
                    await asyncio.sleep(min(0.25 * (attempt + 1), 2))
        assert last is not None
        if isinstance(last, NestedFailure):
            message = last.reason
        else:
            reason = str(last) if isinstance(last, SecretUnavailable) else short_reason(last, step)
            message = f"{describe(label, step)}: {reason}"
        if step.optional:
            self.log_line("warning", f"{message} (optional, continuing)")
            return None
        return message

    async def _run_step(self, page: Page, step: Step, label: str) -> None:
        action = ACTIONS.get(type(step))
        if action is None:  # pragma: no cover - the contract's discriminated union makes this unreachable
            raise StepError(f"unsupported action {step.action!r}")
        await action(self, page, step, label, float(step.timeout_ms or DEFAULT_STEP_TIMEOUT_MS))

    async def run_steps(self, page: Page, steps: Sequence[Step], label: str) -> None:
        """Nested steps (`if`, `repeat`): the first failure fails the enclosing step with its message."""
        for i, step in enumerate(steps):
            failure = await self._run_guarded(page, step, f"{label}.{i}")
            if failure is not None:
                raise NestedFailure(failure)

    def masked(self, outcome: StepsOutcome) -> StepsOutcome:
        return outcome.masked(self._mask)

    async def partial_result(self) -> dict[str, Any]:
        """What the steps produced so far (also after a timeout or a cancellation)."""
        url, title = await where(self._page)
        result: dict[str, Any] = {
            "extracted": self.extracted,
            "steps": self.index,
            "url": url,
            "title": title,
        }
        if self.policy is not None and self.policy.blocked:
            result["blocked"] = [{"host": h, "reason": r} for h, r in self.policy.blocked[:50]]
        return result

    def log_line(self, level: Literal["info", "warning", "error"], message: str) -> None:
        """A task log line about the top-level step running now."""
        line = TaskLogLine(
            level=level, message=self._mask.text(message), step=self.index, at=datetime.now(UTC)
        )
        self.logs.append(logship.emit(line))

    def locate(self, page: Page, step: Step, selector: str) -> Locator:
        """`selector` (rendered) in the page, or in the step's `frame` when it names one."""
        root: Page | FrameLocator = page
        if step.frame:
            root = page.frame_locator(self.render(step.frame)).first
        return root.locator(self.render(selector))

    def store(self, name: str, value: Any) -> None:
        """An extracted value under `name`; inside a `repeat`, values of every iteration are kept."""
        if self.accumulate and name in self.extracted:
            prev = self.extracted[name]
            if isinstance(prev, list) and isinstance(value, list):
                prev.extend(value[: max(0, MAX_RECORDS * 10 - len(prev))])
                return
            self.extracted[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
            return
        self.extracted[name] = value

    def add_artifact(self, name: str, content_type: str, data: bytes) -> None:
        taken = {a.name for a in self.artifacts}
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        candidate, n = name, 2
        while candidate in taken:  # two artifacts with one name must not overwrite each other
            candidate = f"{stem}-{n}{dot}{ext}"
            n += 1
        self.artifacts.append(Artifact(name=candidate, content_type=content_type, data=data))


# A second recording in a trace archive: the trace viewer loads every `<name>.trace` of an archive (with its
# `<name>.network`) into one timeline, resources shared
_SECOND = {"trace.trace": "failure.trace", "trace.network": "failure.network"}
NETWORK_ENTRY = "trace.network"


def merge_traces(trace: bytes, second: bytes | None, network: bytes | None = None) -> bytes:
    """`trace`'s archive with `second`'s recording added beside its own (as failure.trace and failure.network)
    and the resources it adds, and `network` (a network file, netlog.trace_network) as its network log."""
    out = io.BytesIO()
    archives: list[tuple[bytes, dict[str, str]]] = [(trace, {})]
    if second is not None:
        archives.append((second, _SECOND))
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as merged:
        names: set[str] = set()
        if network is not None:
            # the recording's own is empty: Playwright's trace records the network only with snapshots
            names.add(NETWORK_ENTRY)
            merged.writestr(NETWORK_ENTRY, network)
        for data, rename in archives:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    name = rename.get(info.filename, info.filename)
                    if name not in names:
                        names.add(name)
                        merged.writestr(name, archive.read(info))
    return out.getvalue()


def forget_recording(context: BrowserContext) -> None:
    """The client's side of a recording that the context's close will discard unsaved. Playwright's client
    counts its connection as tracing from a recording's start until that recording is stopped, and meanwhile
    every call of every context on the connection also sends its stack to the driver (one more message and a
    task per call); a recording never stopped left the count raised for the browser's life. No round trip."""
    reset = getattr(getattr(context.tracing, "_impl_obj", None), "_reset_stack_counter", None)
    if callable(reset):
        reset()


async def _bounded(aw: Any, seconds: float = 10) -> Any:
    try:
        return await asyncio.wait_for(aw, seconds)
    except (PlaywrightError, TimeoutError):
        log.debug("a bounded browser call failed", exc_info=True)
        return None
