"""Tasks: what a client submits, what travels on TASKS / TASK_UPDATES, and what comes back."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, HttpUrl, field_validator, model_validator

from .common import Contract, OrgScoped

TaskStatus = Literal[
    "pending", "queued", "assigned", "running", "completed", "failed", "cancelled", "timed_out"
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "timed_out"})
Priority = Literal["low", "normal", "high", "urgent"]
TaskKind = Literal["steps", "agent"]

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# `{{ secrets.NAME }}` or `{{ secrets.NAME.totp }}`; anything else that looks like a reference is an error.
SECRET_REF = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]{0,63})(\.totp)?\s*\}\}")
_LOOSE_REF = re.compile(r"\{\{\s*secrets\b[^}]*\}\}")
WORKER_TAG_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,62}$"

Selector = Annotated[str, Field(min_length=1, max_length=2000)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def secret_refs(text: str) -> set[str]:
    """Names referenced as `{{ secrets.NAME }}` in `text`; raises ValueError on a malformed reference."""
    names = {m.group(1) for m in SECRET_REF.finditer(text)}
    stripped = SECRET_REF.sub("", text)
    if _LOOSE_REF.search(stripped):
        raise ValueError("malformed secret reference: use {{ secrets.NAME }} with NAME of letters, digits, _")
    return names


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
    | RepeatStep,
    Field(discriminator="action"),
]
IfStep.model_rebuild()
RepeatStep.model_rebuild()

DOMAIN_PATTERN = r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$"


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list | tuple):
        return [s for v in obj for s in _strings(v)]
    return []


def _check_result_schema(v: dict[str, Any] | None) -> dict[str, Any] | None:
    if v is None:
        return v
    try:  # contracts import pydantic only; where jsonschema is installed (gateway, worker) we check early
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError
    except ImportError:  # pragma: no cover - the worker validates the schema at run time either way
        return v
    try:
        Draft202012Validator.check_schema(v)
    except SchemaError as exc:
        raise ValueError(f"result_schema is not a valid JSON Schema: {exc.message}") from None
    return v


class ProxySpec(Contract):
    """Proxy for a task. Username/password may be `{{ secrets.NAME }}` references."""

    server: str = Field(min_length=1, max_length=500, pattern=r"^(https?|socks5)://")
    username: str | None = Field(default=None, max_length=500)
    password: str | None = Field(default=None, max_length=500)
    bypass: str | None = Field(default=None, max_length=2000)


class AgentOptions(Contract):
    """Limits of an agent task's LLM loop. The endpoint comes from the worker's settings; so does the API key,
    unless `api_key_secret` names an organization credential to use instead."""

    model: str | None = Field(default=None, max_length=200, description="overrides the worker's default")
    max_steps: int = Field(default=25, ge=1, le=200)
    start_url: str | None = Field(default=None, max_length=8192)
    screenshots: bool = False
    api_key_secret: str | None = Field(
        default=None,
        pattern=SECRET_NAME_PATTERN,
        description="name of an organization credential (vault) whose value is the LLM API key for this "
        "task, sent as the bearer token to the worker's endpoint instead of its own key; released like any "
        "task secret, masked everywhere, and never offered to the model",
    )


class TaskSpec(Contract):
    """What a worker needs to run a task."""

    kind: TaskKind = "steps"
    steps: list[Step] = Field(default_factory=list, max_length=500)
    goal: str | None = Field(default=None, max_length=20_000)
    allowed_domains: list[Annotated[str, Field(pattern=DOMAIN_PATTERN)]] | None = Field(
        default=None,
        max_length=100,
        description="hosts the task may reach (`example.com` also allows its subdomains; `*.example.com` "
        "only them); unset = any public host",
    )
    result_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the result's `extracted` must match, else the task fails"
    )
    profile: Name | None = Field(default=None, description="browser profile (cookies, storage) to load/save")
    proxy: ProxySpec | None = None
    secrets: list[Annotated[str, Field(pattern=SECRET_NAME_PATTERN)]] = Field(
        default_factory=list, max_length=50, description="secrets an agent task may type (as placeholders)"
    )
    agent: AgentOptions | None = None

    _valid_schema = field_validator("result_schema")(_check_result_schema)

    def secret_names(self) -> set[str]:
        names: set[str] = set(self.secrets)
        for step in self.steps:
            for value in _strings(step.model_dump()):
                names |= secret_refs(value)
        if self.goal:
            names |= secret_refs(self.goal)
        if self.proxy is not None:
            for value in _strings(self.proxy.model_dump()):
                names |= secret_refs(value)
        if self.agent is not None:
            if self.agent.start_url:
                names |= secret_refs(self.agent.start_url)
            if self.agent.api_key_secret:
                names.add(self.agent.api_key_secret)
        return names


class TaskCreate(Contract):
    """Body of `POST /api/v1/tasks`.

    Also accepts the seed's short form `{"task": "natural language", ...}` as an agent task.
    """

    title: str | None = Field(default=None, max_length=500)
    kind: TaskKind | None = None
    steps: list[Step] | None = Field(default=None, max_length=500)
    goal: str | None = Field(default=None, max_length=20_000)
    task: str | None = Field(default=None, max_length=20_000, description="seed short form of `goal`")
    priority: Priority = "normal"
    worker_tags: list[Annotated[str, Field(pattern=WORKER_TAG_PATTERN)]] = Field(
        default_factory=list, max_length=20
    )
    timeout_seconds: int = Field(default=300, ge=1, le=86_400)
    max_attempts: int = Field(default=3, ge=1, le=10)
    webhook_url: HttpUrl | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)
    allowed_domains: list[Annotated[str, Field(pattern=DOMAIN_PATTERN)]] | None = Field(
        default=None, max_length=100
    )
    result_schema: dict[str, Any] | None = None
    profile: Name | None = None
    proxy: ProxySpec | None = None
    secrets: list[Annotated[str, Field(pattern=SECRET_NAME_PATTERN)]] = Field(
        default_factory=list, max_length=50
    )
    agent: AgentOptions | None = None

    _valid_schema = field_validator("result_schema")(_check_result_schema)

    @model_validator(mode="after")
    def _shape(self) -> TaskCreate:
        if self.task is not None:
            if self.goal is not None:
                raise ValueError("give either `task` or `goal`, not both")
            self.goal, self.task = self.task, None
        if self.kind is None:
            self.kind = "agent" if self.goal is not None and not self.steps else "steps"
        if self.kind == "steps" and not self.steps:
            raise ValueError("a steps task needs a non-empty `steps` list")
        if self.kind == "agent" and not self.goal:
            raise ValueError("an agent task needs a `goal` (or `task`)")
        if self.kind == "agent" and self.steps:
            raise ValueError("an agent task takes a `goal`, not `steps`")
        self.spec().secret_names()  # raises on malformed references
        return self

    def spec(self) -> TaskSpec:
        return TaskSpec(
            kind=self.kind or "steps",
            steps=list(self.steps or []),
            goal=self.goal,
            allowed_domains=self.allowed_domains,
            result_schema=self.result_schema,
            profile=self.profile,
            proxy=self.proxy,
            secrets=self.secrets,
            agent=self.agent,
        )


class ArtifactRef(BaseModel):
    name: str
    object_name: str
    content_type: str
    size: int


def artifact_object_name(task_id: str, attempt: int, name: str) -> str:
    """Where an attempt's artifact is stored in the object store; `artifact_attempt` reads it back."""
    return f"{task_id}/{attempt}/{name}"


def artifact_attempt(object_name: str) -> int | None:
    """The attempt an artifact's object belongs to, None if it is not named by `artifact_object_name`."""
    parts = object_name.split("/", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


class TaskPublic(BaseModel):
    id: str
    org_id: str
    title: str | None
    kind: TaskKind
    status: TaskStatus
    status_detail: str | None = None
    priority: Priority
    worker_tags: list[str]
    spec: TaskSpec
    timeout_seconds: int
    max_attempts: int
    attempt: int
    worker_id: str | None = None
    result: dict[str, Any] | None = None
    error_message: str | None = None
    error_step: int | None = None
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    webhook_url: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_time_seconds: float | None = None


# --- gateway -> scheduler -----------------------------------------------------------------------
class CreateTaskRequest(OrgScoped):
    task: TaskCreate
    idempotency_key: str | None = Field(default=None, max_length=255)


class GetTaskRequest(OrgScoped):
    task_id: str = Field(min_length=1, max_length=64)


class ListTasksRequest(OrgScoped):
    status: TaskStatus | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


# --- TASKS stream: scheduler -> worker ----------------------------------------------------------
class TaskDispatch(Contract):
    task_id: str
    org_id: str
    attempt: int
    priority: Priority
    timeout_seconds: int
    spec: TaskSpec


class ClaimRequest(Contract):
    task_id: str
    attempt: int
    worker_key: str = Field(min_length=1, max_length=200)
    delivery: int | None = Field(
        default=None,
        ge=1,
        description="JetStream delivery count of the TASKS message; a higher count than the holder's "
        "means the holder's lease expired (the scheduler then retries the task as a new attempt)",
    )


class ClaimReply(BaseModel):
    granted: bool
    reason: str | None = None
    worker_id: str | None = None
    task: TaskDispatch | None = None


class ClaimInfoRequest(Contract):
    task_id: str


class ClaimInfo(BaseModel):
    """What the vault asks the scheduler before it releases a secret."""

    task_id: str
    org_id: str
    status: TaskStatus
    attempt: int
    worker_id: str | None
    secret_names: list[str]


# --- TASK_UPDATES stream: worker -> scheduler ---------------------------------------------------
class TaskLogLine(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str
    step: int | None = None
    at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="structured context of the line")
    seq: int | None = Field(
        default=None, ge=0, description="per-attempt line number; makes a re-sent line a duplicate"
    )


class TaskUpdateMessage(Contract):
    task_id: str
    attempt: int
    worker_id: str
    kind: Literal["started", "log", "result"]
    status: Literal["completed", "failed"] | None = None
    result: dict[str, Any] | None = None
    error_message: str | None = None
    error_step: int | None = None
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    execution_time_seconds: float | None = None
    logs: list[TaskLogLine] = Field(default_factory=list)
    retryable: bool = Field(
        default=False,
        description="on a failed result: the attempt failed because of the worker's browser (it crashed or "
        "disconnected, or the task's context or a page crashed), not because of the task's steps; the "
        "scheduler may run the task again as a new attempt while attempts remain",
    )
