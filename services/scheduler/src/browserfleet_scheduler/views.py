"""What the scheduler answers with: a task's public view and its dispatch message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from browserfleet_contracts.tasks import TaskDispatch, TaskPublic, TaskSpec
from browserfleet_core.projection import project

from .models import Task

# the columns a TaskPublic is made of (the attribute names of Task)
PUBLIC_COLUMNS = (
    "id", "org_id", "title", "kind", "status", "status_detail", "priority", "worker_tags", "timeout_seconds",
    "max_attempts", "attempt", "worker_id", "result", "error_message", "error_step", "artifacts",
    "webhook_url", "task_metadata", "created_by", "created_at", "updated_at", "started_at", "completed_at",
    "execution_time_seconds",
)  # fmt: skip


def to_public(task: Task) -> TaskPublic:
    return public_from_values(
        {name: getattr(task, name) for name in PUBLIC_COLUMNS}, TaskSpec.model_validate(task.spec)
    )


# the columns a TaskPublic takes as they are, under their own names; the other three are converted below
_AS_IS = tuple(name for name in PUBLIC_COLUMNS if name not in {"worker_tags", "artifacts", "task_metadata"})


def public_from_values(row: Mapping[str, Any], spec: TaskSpec) -> TaskPublic:
    """A task's public view from its column values; a new task's values lack what only running sets."""
    return TaskPublic(
        **{name: row.get(name) for name in _AS_IS},
        spec=spec,
        worker_tags=list(row["worker_tags"]),
        artifacts=row.get("artifacts") or [],
        metadata=dict(row["task_metadata"]),
    )


def to_dispatch(task: Task) -> TaskDispatch:
    """The TASKS message of the task's current attempt (also made from the claim's RETURNING row, which
    has these attributes)."""
    return project(TaskDispatch, task, task_id=task.id, spec=TaskSpec.model_validate(task.spec))
