"""What a run of steps returns, and how a failed step reads: short, naming the step, never a secret."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from browserfleet_contracts.steps import (
    ArtifactSource,
    DownloadStep,
    EvaluateStep,
    NavigateStep,
    Step,
    WaitForStep,
)
from browserfleet_contracts.tasks import TaskLogLine
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from ..secret_values import Masker

_API_PREFIX = re.compile(r"^[A-Za-z]+\.[A-Za-z_]+: ")
_TIMEOUT = re.compile(r"Timeout (\d+)ms exceeded")


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
    # `timed_out`: the task's own `timeout_seconds` ran out before its steps (or its agent) finished
    status: Literal["completed", "failed", "timed_out"]
    result: dict[str, Any]
    error_message: str | None = None
    error_step: int | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    logs: list[TaskLogLine] = field(default_factory=list)
    execution_time_seconds: float = 0.0
    # failed because of the browser (crash, disconnect), not the steps: the scheduler may try again
    retryable: bool = False

    def masked(self, mask: Masker) -> StepsOutcome:
        """This outcome with `mask`'s values masked out of its result, its error and its log lines."""
        self.result = mask.deep(self.result)
        if self.error_message:
            self.error_message = mask.text(self.error_message)
        for line in self.logs:
            line.message = mask.text(line.message)
        return self


async def where(page: Page | None) -> tuple[str | None, str | None]:
    """The URL and the title of the page a run was on (None once it is closed; no title from a page that
    does not answer within 5 s): what a partial result says of where the run stopped."""
    if page is None or page.is_closed():
        return None, None
    url = page.url
    try:
        return url, await asyncio.wait_for(page.title(), 5)
    except (PlaywrightError, TimeoutError):
        return url, None


class StepError(Exception):
    """A step failed; `reason` is short and already free of Playwright's call log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NestedFailure(StepError):
    """A step inside `if`/`repeat` failed; `reason` is its whole message, naming the nested step."""


def describe(index: int | str, step: Step) -> str:
    """`step 3 (click '#go')`, from the template, so it can never carry a secret value."""
    target = step.url if isinstance(step, NavigateStep) else getattr(step, "selector", None)
    if isinstance(step, EvaluateStep):
        target = step.expression
    if not target:
        return f"step {index} ({step.action})"
    if len(target) > 80:
        target = target[:77] + "..."
    return f"step {index} ({step.action} {target!r})"


def short_reason(exc: BaseException, step: Step) -> str:
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


def schema_errors(schema: dict[str, Any], value: Any) -> str | None:
    """The first mismatch of `value` against a JSON Schema, naming its path (`$.orders[1].total`)."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    err = errors[0]
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return f"result does not match result_schema at {path}: {err.message}"
