"""Cron schedules: a cron expression in an IANA timezone that creates a task from a template per tick."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

from .common import ById, Contract, OrgScoped
from .tasks import TaskCreate


def _check_timezone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {v!r}") from exc
    return v


class ScheduleCreate(Contract):
    """Body of `POST /admin/schedules`. The cron expression is parsed by the scheduler (422 `cron`)."""

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200, description="5-field cron, e.g. `*/15 * * * *`")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="IANA name")
    task: TaskCreate
    paused: bool = False

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_timezone(v)


class ScheduleUpdate(Contract):
    """Body of `PUT /admin/schedules/{id}`: the fields given replace the stored ones."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    cron: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    task: TaskCreate | None = None
    paused: bool | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else _check_timezone(v)


class SchedulePublic(BaseModel):
    id: str
    org_id: str
    name: str
    cron: str
    timezone: str
    task: TaskCreate
    paused: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class CreateScheduleRequest(OrgScoped):
    schedule: ScheduleCreate


class UpdateScheduleRequest(ById):
    schedule: ScheduleUpdate


class ListSchedulesRequest(OrgScoped):
    pass
