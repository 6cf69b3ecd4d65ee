"""Tasks: what a client submits, what travels on TASKS / TASK_UPDATES, and what comes back."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, HttpUrl, field_validator, model_validator

from .common import Contract, Name, OrgScoped
from .secret_refs import SECRET_NAME_PATTERN, secret_refs
from .steps import Step, handoffs

TaskStatus = Literal[
    "pending", "queued", "assigned", "running", "completed", "failed", "cancelled", "timed_out"
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "timed_out"})
Priority = Literal["low", "normal", "high", "urgent"]
TaskKind = Literal["steps", "agent"]

WORKER_TAG_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,62}$"

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

    def page_secret_names(self) -> set[str]:
        """The secrets that may reach a page (typed, in a URL, the agent's typeable ones): not a proxy's
        password, nor the org's LLM key unless the task also names it to be typed. A task with any is never
        shown live (its frames would show them)."""
        agent = self.agent.model_copy(update={"api_key_secret": None}) if self.agent is not None else None
        return self.model_copy(update={"proxy": None, "agent": agent}).secret_names()


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
        spec = self.spec()
        spec.secret_names()  # raises on malformed references
        if handoffs(spec.steps) and spec.page_secret_names():
            raise ValueError(
                "a task that types vault secrets cannot hand off to a person: it is never shown live"
            )
        return self

    def fingerprint(self) -> str:
        """SHA-256 of the body as validated (defaults filled in, `task` read as `goal`), in canonical JSON:
        what an `Idempotency-Key` is held to, so a retry that spells the same task differently still matches
        and a different task under a used key does not."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

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
    body_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="`TaskCreate.fingerprint()` of the client's body as it arrived (the gateway takes it before "
        "it resolves references); the scheduler stores it with `idempotency_key` and refuses the key with a "
        "different body (409). Unset: the scheduler takes the fingerprint of `task`",
    )


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
LogLevel = Literal["debug", "info", "warning", "error"]
# how an attempt ends, as its worker reports it: `timed_out` when the task's own `timeout_seconds` ran out
ResultStatus = Literal["completed", "failed", "timed_out"]


class TaskLogLine(BaseModel):
    level: LogLevel = "info"
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
    kind: Literal["started", "log", "result", "security"]
    status: ResultStatus | None = None
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
    security: dict[str, Any] | None = Field(
        default=None,
        description="kind `security`: a request safe browsing refused, as `events.RequestBlockedData` (a dict "
        "here: events imports this module); the scheduler emits it as security.request_blocked, for the "
        "task's organization, when this worker holds the attempt",
    )


# --- POST /workers/tasks/{id}/result: a worker that speaks HTTP -> gateway -> scheduler -------------
class WorkerResultBody(Contract):
    """Body of `POST /workers/tasks/{task_id}/result`: the result of the attempt this worker claimed, as a
    worker that speaks HTTP reports it (a bus worker publishes the same on TASK_UPDATES). `status`
    `success` is the seed's word for `completed`; a plain-text `result` is stored as `{"result": text}`."""

    status: ResultStatus
    attempt: int | None = Field(
        default=None, ge=1, description="the attempt reported on; unset: the latest this worker claimed"
    )
    result: dict[str, Any] | None = None
    error_message: str | None = Field(default=None, max_length=10_000)
    error_step: int | None = Field(default=None, ge=0)
    execution_time: float | None = Field(default=None, ge=0, description="seconds the attempt ran")
    logs: list[TaskLogLine] = Field(default_factory=list, max_length=1000)

    @field_validator("status", mode="before")
    @classmethod
    def _seed_status(cls, v: Any) -> Any:
        return "completed" if v == "success" else v

    @field_validator("result", mode="before")
    @classmethod
    def _text_result(cls, v: Any) -> Any:
        return {"result": v} if isinstance(v, str) else v


class WorkerResultRequest(WorkerResultBody):
    task_id: str = Field(min_length=1, max_length=64)
    worker_key: str = Field(min_length=1, max_length=200)


class WorkerResultReply(BaseModel):
    """`recorded`: this report ended the attempt; false: it had already been recorded (a retried request),
    and nothing changed."""

    task_id: str
    attempt: int
    status: TaskStatus
    recorded: bool
