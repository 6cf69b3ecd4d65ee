"""Cron schedules: CRUD and firing. A tick creates its task with (schedule_id, tick) unique, so any number
of replicas firing the same tick make one task; the schedule row is locked SKIP LOCKED while it advances."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.events import EventType
from browserfleet_contracts.schedules import (
    CreateScheduleRequest,
    ListSchedulesRequest,
    SchedulePublic,
    UpdateScheduleRequest,
)
from browserfleet_contracts.tasks import TaskCreate
from browserfleet_core.db import AsyncSession, new_id, utcnow
from browserfleet_core.errors import Forbidden, Invalid, NotFound
from browserfleet_core.outbox import OutboxRelay
from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

from . import events, repository
from .creation import build_task_values
from .models import Schedule
from .queries import is_uuid

CRON_ERRORS = (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, KeyError)


def next_tick(cron: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after `after`, computed in the schedule's timezone (DST-aware)."""
    local = after.astimezone(ZoneInfo(timezone))
    nxt: datetime = croniter(cron, local).get_next(datetime)
    return nxt.astimezone(after.tzinfo)


def check_cron(cron: str, timezone: str, now: datetime) -> datetime:
    if len(cron.split()) != 5:
        raise Invalid("cron: expected 5 fields (minute hour day month weekday)", field="schedule.cron")
    try:
        if not croniter.is_valid(cron):
            raise ValueError(cron)
        return next_tick(cron, timezone, now)
    except CRON_ERRORS as exc:
        raise Invalid(f"cron: {cron!r} is not a cron expression", field="schedule.cron") from exc


def to_public(s: Schedule) -> SchedulePublic:
    """The row's columns under their own names (those the view has), and its template as the task it makes."""
    return SchedulePublic.model_validate({**s.model_dump(), "task": s.template})


def _writer(actor: Actor) -> None:
    if actor.role != "admin":
        raise Forbidden("only admins manage schedules", code="insufficient_role")


async def create_schedule(
    session: AsyncSession, req: CreateScheduleRequest, now: datetime | None = None
) -> SchedulePublic:
    now = now or utcnow()
    _writer(req.actor)
    body = req.schedule
    first = check_cron(body.cron, body.timezone, now)
    row = Schedule(
        id=new_id(),
        org_id=req.actor.org_id,
        name=body.name,
        cron=body.cron,
        timezone=body.timezone,
        template=body.task.model_dump(mode="json", exclude_none=True),
        paused=body.paused,
        next_run_at=None if body.paused else first,
        created_by=req.actor.user_id or req.actor.api_key_id,
        plan=req.actor.plan,
        created_at=now,
        updated_at=now,
    )
    await repository.save(session, row)
    return to_public(row)


async def _own(session: AsyncSession, actor: Actor, schedule_id: str, *, lock: bool = False) -> Schedule:
    row = (
        await repository.get_schedule(session, schedule_id, org_id=actor.org_id, lock=lock)
        if is_uuid(schedule_id)
        else None
    )
    if row is None:
        raise NotFound("schedule not found", field="id")
    return row


async def get_schedule(session: AsyncSession, req: ById) -> SchedulePublic:
    return to_public(await _own(session, req.actor, req.id))


async def list_schedules(session: AsyncSession, req: ListSchedulesRequest) -> list[SchedulePublic]:
    return [to_public(s) for s in await repository.list_schedules(session, req.actor.org_id)]


async def update_schedule(
    session: AsyncSession, req: UpdateScheduleRequest, now: datetime | None = None
) -> SchedulePublic:
    now = now or utcnow()
    _writer(req.actor)
    row = await _own(session, req.actor, req.id, lock=True)
    body = req.schedule
    cron = body.cron if body.cron is not None else row.cron
    timezone = body.timezone if body.timezone is not None else row.timezone
    upcoming = check_cron(cron, timezone, now)
    if body.name is not None:
        row.name = body.name
    if body.task is not None:
        row.template = body.task.model_dump(mode="json", exclude_none=True)
    if body.paused is not None:
        row.paused = body.paused
    row.cron, row.timezone = cron, timezone
    # resuming never fires the ticks missed while paused: the next one is in the future
    row.next_run_at = None if row.paused else upcoming
    row.updated_at = now
    await repository.save(session, row)
    return to_public(row)


async def delete_schedule(session: AsyncSession, req: ById) -> None:
    _writer(req.actor)
    await repository.delete_schedule(session, await _own(session, req.actor, req.id, lock=True))


async def fire_due(session: AsyncSession, relay: OutboxRelay, now: datetime, limit: int = 100) -> list[str]:
    """Create the task of every due tick; returns the new task ids. Missed ticks (scheduler down) are
    not replayed one by one: the most recent due tick fires once and the schedule moves to the future."""
    created: list[str] = []
    for row in await repository.due_schedules(session, now, limit):
        assert row.next_run_at is not None
        tick = row.next_run_at
        # catch up: the latest tick that is not in the future
        while True:
            after = next_tick(row.cron, row.timezone, tick)
            if after > now:
                break
            tick = after
        template = TaskCreate.model_validate(row.template)
        actor = Actor(org_id=row.org_id, user_id=row.created_by, role="admin", plan=row.plan)
        values = build_task_values(actor, template, None, now)
        values["schedule_id"] = row.id
        values["schedule_tick"] = tick
        values["task_metadata"] = {**values["task_metadata"], "schedule_id": row.id}
        if await repository.insert_task_for_tick(session, values):
            task = await repository.get_task(session, values["id"])
            assert task is not None
            await events.emit(relay, session, task, EventType.TASK_CREATED)
            created.append(task.id)
        row.last_run_at = tick
        row.next_run_at = after
        row.updated_at = now
        await repository.save(session, row)
    return created
