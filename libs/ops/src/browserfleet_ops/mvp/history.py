"""The MVP's finished (and interrupted) tasks as history rows of the scheduler: the one write of the import
that is SQL rather than a service call, because the scheduler has no endpoint that records a task it never
ran (CREATE_TASK makes a `queued` task and runs it). The rows are what the scheduler itself leaves behind
for a finished task: the task in a terminal state with its one attempt and its log lines, no outbox row
(history fires no `task.*` event or webhook) and nothing to dispatch, so no state machine is bypassed. The
id is derived from the organization and the MVP id, so a second run inserts nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from browserfleet_contracts.tasks import TaskCreate
from psycopg.types.json import Jsonb

from .format import HISTORY, INTERRUPTED_CAUSE, MvpLog, MvpTask

NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4c55-9a43-2b8f0f3f5a10")


def task_id(org_id: str, mvp_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{org_id}:{mvp_id}"))


def _result(task: MvpTask) -> dict[str, Any] | None:
    if task.result is None:
        return None
    return task.result if isinstance(task.result, dict) else {"output": task.result}


def insert(
    conn: psycopg.Connection[Any], org_id: str, plan: str | None, task: MvpTask, worker_name: str | None
) -> tuple[str, bool]:
    """Inserts the task once; returns its id and whether this call inserted it."""
    tid = task_id(org_id, task.id)
    if task.fate == "history":
        status, error = HISTORY[task.status], task.error
    else:
        status, error = "failed", INTERRUPTED_CAUSE.format(status=task.status)
    now = datetime.now(UTC)
    created = task.created_at or task.started_at or task.completed_at or now
    finished = task.completed_at or task.started_at or created
    spec = TaskCreate(task=task.description).spec()
    metadata = {"mvp_id": task.id, **({"mvp_worker": worker_name} if worker_name else {})}
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO scheduler.tasks (id, org_id, title, kind, status, status_detail, priority, worker_tags,"
            " spec, secret_names, timeout_seconds, max_attempts, attempt, result, error_message, artifacts,"
            " metadata, created_at, updated_at, started_at, completed_at, execution_time_seconds, plan)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'normal', '[]', %s, '[]', 300, 1, 1, %s, %s, '[]', %s, %s, %s, %s,"
            " %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
            (
                tid,
                org_id,
                task.description[:500],
                spec.kind,
                status,
                "imported from the MVP",
                Jsonb(spec.model_dump(mode="json")),
                Jsonb(_result(task)) if task.result is not None else None,
                error,
                Jsonb(metadata),
                created,
                finished,
                task.started_at,
                finished,
                (finished - task.started_at).total_seconds()
                if task.started_at and task.completed_at
                else None,
                plan,
            ),
        ).fetchone()
        if row is None:
            return tid, False
        conn.execute(
            "INSERT INTO scheduler.task_attempts (task_id, attempt, status, claimed_at, finished_at, error)"
            " VALUES (%s, 1, %s, %s, %s, %s)",
            (tid, status, task.started_at or created, finished, error),
        )
        for seq, line in enumerate(task.logs):
            log = line if isinstance(line, MvpLog) else MvpLog(message=line)
            conn.execute(
                "INSERT INTO scheduler.task_logs (task_id, attempt, seq, level, message, metadata, at)"
                " VALUES (%s, 1, %s, %s, %s, '{}', %s) ON CONFLICT DO NOTHING",
                (tid, seq, log.level[:16], log.message, log.at or created),
            )
    return tid, True
