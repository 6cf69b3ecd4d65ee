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


class WaitForStep(_Step):
    action: Literal["wait_for"]
    selector: Selector
    state: Literal["attached", "detached", "visible", "hidden"] = "visible"


class ExtractStep(_Step):
    """`selector` alone: the text of the first match. With `fields`: one record per `selector` match,
    each field the text of a sub-selector inside that row."""

    action: Literal["extract"]
    name: Name = "extracted"
    selector: Selector
    fields: dict[Name, Selector] | None = Field(default=None, max_length=100)
    attribute: str | None = Field(default=None, max_length=256)


class ScreenshotStep(_Step):
    action: Literal["screenshot"]
    name: Name = "screenshot"
    full_page: bool = False
    selector: Selector | None = None


Step = Annotated[
    NavigateStep | ClickStep | FillStep | PressStep | WaitForStep | ExtractStep | ScreenshotStep,
    Field(discriminator="action"),
]


class TaskSpec(Contract):
    """What a worker needs to run a task."""

    kind: TaskKind = "steps"
    steps: list[Step] = Field(default_factory=list, max_length=500)
    goal: str | None = Field(default=None, max_length=20_000)

    def secret_names(self) -> set[str]:
        names: set[str] = set()
        for step in self.steps:
            for value in step.model_dump().values():
                if isinstance(value, str):
                    names |= secret_refs(value)
                elif isinstance(value, dict):
                    for v in value.values():
                        if isinstance(v, str):
                            names |= secret_refs(v)
        if self.goal:
            names |= secret_refs(self.goal)
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
        return TaskSpec(kind=self.kind or "steps", steps=list(self.steps or []), goal=self.goal)


class ArtifactRef(BaseModel):
    name: str
    object_name: str
    content_type: str
    size: int


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
