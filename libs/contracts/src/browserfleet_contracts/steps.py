"""The steps language: what a `steps` task does in the browser, one discriminated `Step` per action."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from .common import Contract, Name
from .secret_refs import SECRET_REF

Selector = Annotated[str, Field(min_length=1, max_length=2000)]


class _Step(Contract):
    timeout_ms: int | None = Field(default=None, ge=1, le=300_000, description="per-step timeout")
    optional: bool = Field(default=False, description="a failure of this step does not fail the task")
    retries: int = Field(default=0, ge=0, le=5, description="times a failing step is tried again")
    frame: Selector | None = Field(
        default=None, description="selector of an <iframe>: the step's selectors apply inside it"
    )


class NavigateStep(_Step):
    action: Literal["navigate"]
    url: str = Field(min_length=1, max_length=8192)
    wait_until: Literal["load", "domcontentloaded", "networkidle", "commit"] = "load"

    @field_validator("url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        probe = SECRET_REF.sub("x", v)
        parts = urlsplit(probe)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("url must be an absolute http:// or https:// URL")
        return v


class ClickStep(_Step):
    action: Literal["click"]
    selector: Selector


class FillStep(_Step):
    action: Literal["fill"]
    selector: Selector
    value: str = Field(max_length=100_000)


class PressStep(_Step):
    action: Literal["press"]
    selector: Selector
    key: str = Field(min_length=1, max_length=64)


MAX_WAIT_DELAY_MS = 30_000


class WaitForStep(_Step):
    """Exactly one of: `selector` (reaching `state`), `url` (a glob such as `**/orders*`), `load_state`
    (e.g. `networkidle`), or `delay_ms` (a fixed pause, capped)."""

    action: Literal["wait_for"]
    selector: Selector | None = None
    state: Literal["attached", "detached", "visible", "hidden"] = "visible"
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    load_state: Literal["load", "domcontentloaded", "networkidle"] | None = None
    delay_ms: int | None = Field(default=None, ge=0, le=MAX_WAIT_DELAY_MS)

    @model_validator(mode="after")
    def _one_condition(self) -> WaitForStep:
        given = [f for f in ("selector", "url", "load_state", "delay_ms") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("wait_for takes exactly one of selector, url, load_state, delay_ms")
        return self


class ExtractStep(_Step):
    """`selector` alone: the text of the first match. With `fields`: one record per `selector` match,
    each field the text of a sub-selector inside that row."""

    action: Literal["extract"]
    name: Name = "extracted"
    selector: Selector
    fields: dict[Name, Selector] | None = Field(default=None, max_length=100)
    attribute: str | None = Field(default=None, max_length=256)
    mode: Literal["text", "inner_html", "table", "all"] = Field(
        default="text",
        description="text (first match), inner_html (first match), table (a <table> into records by its "
        "header row), all (the text of every match)",
    )


class ScreenshotStep(_Step):
    action: Literal["screenshot"]
    name: Name = "screenshot"
    full_page: bool = False
    selector: Selector | None = None


class DblClickStep(_Step):
    action: Literal["dblclick"]
    selector: Selector


class HoverStep(_Step):
    action: Literal["hover"]
    selector: Selector


class TypeStep(_Step):
    """Types key by key (for inputs that react to each keystroke); `fill` sets the value at once."""

    action: Literal["type"]
    selector: Selector
    text: str = Field(max_length=10_000)
    delay_ms: int = Field(default=0, ge=0, le=1_000, description="pause between keystrokes")


class SelectOptionStep(_Step):
    action: Literal["select_option"]
    selector: Selector
    values: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=100)
    labels: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _some(self) -> SelectOptionStep:
        if not self.values and not self.labels:
            raise ValueError("select_option needs `values` or `labels`")
        return self


class CheckStep(_Step):
    action: Literal["check", "uncheck"]
    selector: Selector


MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class ArtifactSource(Contract):
    """An artifact of an earlier task of the same organization, as the file to upload."""

    task_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200, description="the artifact's name, e.g. report.pdf")
    attempt: int | None = Field(
        default=None,
        ge=1,
        description="which attempt's artifact; unset = the latest one with that name (the gateway checks the "
        "reference at submission and records the attempt it found)",
    )


class UploadFile(Contract):
    """One file for an `upload` step: exactly one of `content_base64` (inline, with `name`) or `artifact`
    (an artifact of an earlier task of the same organization; `name` and `mime_type` default to its own)."""

    name: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[^/\\]+$")
    mime_type: str | None = Field(
        default=None,
        max_length=255,
        description="default: the artifact's type, else application/octet-stream",
    )
    content_base64: str | None = Field(default=None, max_length=MAX_UPLOAD_BYTES * 4 // 3 + 4)
    artifact: ArtifactSource | None = None

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, v: str | None) -> str | None:
        import base64
        import binascii

        if v is None:
            return v
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_base64 is not valid base64") from None
        return v

    @model_validator(mode="after")
    def _one_source(self) -> UploadFile:
        if (self.content_base64 is None) == (self.artifact is None):
            raise ValueError("a file takes exactly one of `content_base64` or `artifact`")
        if self.content_base64 is not None and self.name is None:
            raise ValueError("an inline file (`content_base64`) needs a `name`")
        return self


class UploadStep(_Step):
    action: Literal["upload"]
    selector: Selector
    files: list[UploadFile] = Field(min_length=1, max_length=10)


class ScrollStep(_Step):
    """`selector`: scroll it into view; else scroll the page by `x`/`y` pixels."""

    action: Literal["scroll"]
    selector: Selector | None = None
    x: int = Field(default=0, ge=-100_000, le=100_000)
    y: int = Field(default=0, ge=-100_000, le=100_000)


class AssertStep(_Step):
    """Fails the task unless every given condition holds: `url` (glob or exact), and for `selector`:
    `text` (contained in its text), `visible`, `count` (number of matches)."""

    action: Literal["assert"]
    selector: Selector | None = None
    text: str | None = Field(default=None, max_length=10_000)
    visible: bool | None = None
    count: int | None = Field(default=None, ge=0, le=100_000)
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    message: str | None = Field(default=None, max_length=500, description="said when the assertion fails")

    @model_validator(mode="after")
    def _some(self) -> AssertStep:
        if self.selector is None and self.url is None:
            raise ValueError("assert needs a `selector` or a `url`")
        if self.selector is None and (self.text, self.visible, self.count) != (None, None, None):
            raise ValueError("text, visible and count need a `selector`")
        return self


class PdfStep(_Step):
    action: Literal["pdf"]
    name: Name = "page"


class DownloadStep(_Step):
    """Clicks `selector` and stores the file it downloads as an artifact (size capped by the worker)."""

    action: Literal["download"]
    selector: Selector
    name: Name | None = Field(default=None, description="artifact name; default the file's own name")


class EvaluateStep(_Step):
    """A JavaScript expression in the page; only when the organization (or operator) allows it."""

    action: Literal["evaluate"]
    expression: str = Field(min_length=1, max_length=20_000)
    name: Name | None = Field(default=None, description="store the (JSON) value under extracted.<name>")


class IfStep(_Step):
    """Runs `then` when `selector` is present on the page (attached), else `otherwise`."""

    action: Literal["if"]
    selector: Selector
    then: list[Step] = Field(default_factory=list, max_length=100)
    otherwise: list[Step] = Field(default_factory=list, max_length=100)


MAX_REPEAT = 100


class RepeatStep(_Step):
    """Pagination: run `steps`, then click `next` while it is present, at most `max_iterations` times."""

    action: Literal["repeat"]
    steps: list[Step] = Field(default_factory=list, max_length=100)
    next: Selector
    max_iterations: int = Field(default=10, ge=1, le=MAX_REPEAT)


HANDOFF_TIMEOUT_MS = 300_000  # a handoff's default wait: the longest a step may take


class HandoffStep(_Step):
    """Pauses the task until a person watching it live (`/api/v1/tasks/{id}/live`) presses continue, e.g. after
    solving a captcha with the mouse and keyboard; fails after `timeout_ms` (default: 5 min, the most a step may
    take). The wait counts against the task's `timeout_seconds`. `message` is shown to the person as written
    (secret references in it are never filled in)."""

    action: Literal["handoff"]
    message: str = Field(
        default="", max_length=500, description="what the person should do before continuing"
    )


Step = Annotated[
    NavigateStep
    | ClickStep
    | FillStep
    | PressStep
    | WaitForStep
    | ExtractStep
    | ScreenshotStep
    | DblClickStep
    | HoverStep
    | TypeStep
    | SelectOptionStep
    | CheckStep
    | UploadStep
    | ScrollStep
    | AssertStep
    | PdfStep
    | DownloadStep
    | EvaluateStep
    | IfStep
    | RepeatStep
    | HandoffStep,
    Field(discriminator="action"),
]
IfStep.model_rebuild()
RepeatStep.model_rebuild()


def handoffs(steps: list[Step]) -> int:
    """How many handoff steps `steps` holds, inside `if` and `repeat` too."""
    count = 0
    for step in steps:
        if isinstance(step, HandoffStep):
            count += 1
        elif isinstance(step, IfStep):
            count += handoffs(step.then) + handoffs(step.otherwise)
        elif isinstance(step, RepeatStep):
            count += handoffs(step.steps)
    return count
