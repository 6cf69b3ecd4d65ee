"""Reading tasks: one task, an org's list (plain and admin-filtered), its attempts and its log lines."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from browserfleet_contracts.common import Page
from browserfleet_contracts.task_admin import (
    AdminListTasksRequest,
    GetTaskAttemptsRequest,
    ListTaskLogsRequest,
    TaskAttemptPublic,
    TaskLogPage,
    TaskLogPublic,
)
from browserfleet_contracts.tasks import (
    TERMINAL_STATUSES,
    GetTaskRequest,
    ListTasksRequest,
    TaskPublic,
    TaskSpec,
)
from browserfleet_core.db import AsyncSession, Database
from browserfleet_core.errors import Invalid, NotFound
from browserfleet_core.projection import project

from . import repository
from .models import Task
from .views import public_from_values, to_public


def is_uuid(value: str) -> bool:
    """Ids are UUIDs; anything else names nothing (and must not reach a uuid comparison in SQL)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def find_task(
    session: AsyncSession, task_id: str, *, org_id: str | None = None, lock: bool = False
) -> Task | None:
    """The task, or None when there is none by that id (in that org, when given)."""
    if not is_uuid(task_id):
        return None
    return await repository.get_task(session, task_id, org_id=org_id, lock=lock)


async def own_task(session: AsyncSession, org_id: str, task_id: str, *, lock: bool = False) -> Task:
    """The org's task, or NotFound (another org's task is not found either)."""
    task = await find_task(session, task_id, org_id=org_id, lock=lock)
    if task is None:
        raise NotFound("task not found", field="task_id")
    return task


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, task_id = json.loads(raw)
        at = datetime.fromisoformat(created)
        if not isinstance(task_id, str) or at.tzinfo is None:
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise Invalid("cursor: not a cursor this API returned", field="cursor") from exc
    return at, task_id


def _page(rows: list[Task], limit: int) -> Page[TaskPublic]:
    """`rows`: up to `limit + 1` tasks, newest first; the extra one only says that there is more."""
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return Page[TaskPublic](items=[to_public(t) for t in page], next_cursor=next_cursor)


async def get_task(session: AsyncSession, req: GetTaskRequest) -> TaskPublic:
    return to_public(await own_task(session, req.actor.org_id, req.task_id))


async def read_task(db: Database, req: GetTaskRequest) -> TaskPublic:
    """`get_task` as the API's hot read: one statement on an autocommit connection (a single SELECT
    reads one snapshot anyway), the view made from the row without an ORM object. Same answers and the
    same NotFound for a task of another org, or an id that is not one."""
    if not is_uuid(req.task_id):
        raise NotFound("task not found", field="task_id")
    async with db.statement() as conn:
        row = await repository.public_row(conn, req.task_id, req.actor.org_id)
    if row is None:
        raise NotFound("task not found", field="task_id")
    return public_from_values(row, TaskSpec.model_validate(row["spec"]))


# the filters of an admin's list, each passed to `repository.list_tasks` by its own name
_ADMIN_FILTERS = {"status", "priority", "worker_id", "tag", "created_after", "created_before"}


async def list_tasks(session: AsyncSession, req: ListTasksRequest) -> Page[TaskPublic]:
    return await _list_page(session, req, status=req.status)


async def admin_list_tasks(session: AsyncSession, req: AdminListTasksRequest) -> Page[TaskPublic]:
    if req.created_after and req.created_before and req.created_after >= req.created_before:
        raise Invalid("created_after must be before created_before", field="created_after")
    return await _list_page(session, req, **req.model_dump(include=_ADMIN_FILTERS))


async def _list_page(
    session: AsyncSession, req: ListTasksRequest | AdminListTasksRequest, **filters: Any
) -> Page[TaskPublic]:
    after = decode_cursor(req.cursor) if req.cursor else None
    rows = await repository.list_tasks(session, req.actor.org_id, limit=req.limit + 1, after=after, **filters)
    return _page(rows, req.limit)


async def task_attempts(session: AsyncSession, req: GetTaskAttemptsRequest) -> list[TaskAttemptPublic]:
    task = await own_task(session, req.actor.org_id, req.task_id)
    return [
        project(TaskAttemptPublic, a, started_at=a.claimed_at)
        for a in await repository.list_attempts(session, task.id)
    ]


async def task_logs(session: AsyncSession, req: ListTaskLogsRequest) -> TaskLogPage:
    task = await own_task(session, req.actor.org_id, req.task_id)
    rows = await repository.list_logs(session, task.id, req.since, req.limit)
    items = [project(TaskLogPublic, r, id=int(r.id or 0), metadata=dict(r.log_metadata)) for r in rows]
    return TaskLogPage(
        items=items,
        next_since=items[-1].id if items else req.since,
        finished=task.status in TERMINAL_STATUSES and len(items) < req.limit,
    )
