"""The MVP's JSON files as `import-mvp` reads them (docs/operations.md "The MVP's files"; a sample in
docs/mvp-sample/). Each file is a JSON array of records (or an object with the array under its own name,
e.g. `{"tasks": [...]}`); unknown fields are ignored. Every record is checked on its own: one that cannot be
taken is reported with the reason and the rest go on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from browserfleet_contracts.vault import SSO_SECRET_TYPE, CredentialCreate
from browserfleet_contracts.workers import InviteCreate
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

# MVP status -> what the import does with the task
HISTORY = {
    "completed": "completed",
    "complete": "completed",
    "success": "completed",
    "succeeded": "completed",
    "done": "completed",
    "failed": "failed",
    "error": "failed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "timeout": "timed_out",
    "timed_out": "timed_out",
}
REQUEUE = frozenset({"pending", "queued", "waiting", "new"})
# started in the MVP, outcome unknown: imported as failed, never run again (it may have acted already)
INTERRUPTED = frozenset({"running", "assigned", "in_progress", "started", "busy"})
INTERRUPTED_CAUSE = (
    "imported from the MVP while {status}: its outcome was never recorded, so it was not run again here;"
    " submit it anew if it is still wanted"
)


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _when(value: Any) -> datetime | None:
    """ISO 8601 strings, or Unix seconds / milliseconds, as the MVP's Node code wrote them."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        return datetime.fromtimestamp(seconds, UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class MvpOrganization(_Record):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, min_length=1, max_length=63)
    plan: str = "free"
    admin_email: str | None = None


class MvpWorker(_Record):
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    token: str | None = None  # the 6-digit token: never carried over (it is not a key)
    capabilities: list[str] = Field(default_factory=list)
    status: str | None = None
    last_seen: datetime | None = None

    _last_seen = field_validator("last_seen", mode="before")(_when)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


class MvpLog(_Record):
    message: str = Field(validation_alias=AliasChoices("message", "msg", "text"))
    level: str = "info"
    at: datetime | None = Field(default=None, validation_alias=AliasChoices("timestamp", "at", "time"))

    _at = field_validator("at", mode="before")(_when)


class MvpTask(_Record):
    id: str = Field(min_length=1, max_length=200)
    description: str = Field(
        min_length=1, max_length=20_000, validation_alias=AliasChoices("description", "task", "goal")
    )
    status: str
    worker: str | None = Field(
        default=None, validation_alias=AliasChoices("assigned_worker", "worker_id", "worker")
    )
    result: Any = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    logs: list[MvpLog | str] = Field(default_factory=list)

    _times = field_validator("created_at", "started_at", "completed_at", mode="before")(_when)

    @field_validator("id", "worker", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @field_validator("status", mode="after")
    @classmethod
    def _known(cls, v: str) -> str:
        status = v.strip().lower()
        if status not in HISTORY and status not in REQUEUE and status not in INTERRUPTED:
            raise ValueError(f"unknown status {v!r}")
        return status

    @property
    def fate(self) -> Literal["history", "requeue", "interrupted"]:
        if self.status in HISTORY:
            return "history"
        return "requeue" if self.status in REQUEUE else "interrupted"


class MvpCredential(_Record):
    name: str
    value: str
    type: str = "password"

    @field_validator("type", mode="after")
    @classmethod
    def _not_sso(cls, v: str) -> str:
        if v == SSO_SECRET_TYPE:  # an identity provider's secret is set up with SSO, never imported
            raise ValueError(f"type {v!r} cannot be imported")
        return v

    def create(self) -> CredentialCreate:
        return CredentialCreate.model_validate({"name": self.name, "value": self.value, "type": self.type})


@dataclass
class Problem:
    file: str
    index: int
    record: str
    reason: str

    def line(self) -> str:
        return f"{self.file}[{self.index}] {self.record}: {self.reason}"


@dataclass
class MvpData:
    organization: MvpOrganization | None = None
    workers: list[MvpWorker] = field(default_factory=list)
    tasks: list[MvpTask] = field(default_factory=list)
    credentials: list[MvpCredential] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _reason(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}" if loc else str(first["msg"])


def _array(path: Path, key: str) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: not readable JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get(key), list):
        data = data[key]
    if isinstance(data, dict):  # {id: record} as the MVP kept some maps
        data = [{"id": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a JSON array of {key}")
    return data


def _label(raw: Any) -> str:
    if isinstance(raw, dict):
        for key in ("id", "name"):
            if raw.get(key) is not None:
                return f"{key}={str(raw[key])[:60]!r}"
    return "(unnamed)"


def load(folder: Path) -> MvpData:
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder")
    out = MvpData()
    org = folder / "organization.json"
    if org.exists():
        try:
            out.organization = MvpOrganization.model_validate(json.loads(org.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{org}: {exc}") from None
    files: tuple[tuple[str, type[_Record], list[Any]], ...] = (
        ("workers", MvpWorker, out.workers),
        ("tasks", MvpTask, out.tasks),
        ("credentials", MvpCredential, out.credentials),
    )
    for name, model, target in files:
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        seen: set[str] = set()
        for index, raw in enumerate(_array(path, name)):
            try:
                record = model.model_validate(raw)
                key = str(getattr(record, "id", None) or getattr(record, "name", ""))
                if key in seen:
                    raise ValueError(
                        f"a second record with the same {'id' if name != 'credentials' else 'name'}"
                    )
                if isinstance(record, MvpCredential):
                    record.create()
                if isinstance(record, MvpWorker):
                    InviteCreate.model_validate({"name": record.name, "capabilities": record.capabilities})
                seen.add(key)
                target.append(record)
            except ValidationError as exc:
                out.problems.append(Problem(path.name, index, _label(raw), _reason(exc)))
            except ValueError as exc:
                out.problems.append(Problem(path.name, index, _label(raw), str(exc)))
    return out
