"""The scheduler's subjects (`svc.scheduler.*`)."""

from __future__ import annotations

from ..bus import GATEWAY, SCHEDULER, VAULT, WORKER, WORKER_GATEWAY
from ..common import Ack, ById, Page
from ..schedules import CreateScheduleRequest, ListSchedulesRequest, SchedulePublic, UpdateScheduleRequest
from ..task_admin import (
    AdminListTasksRequest,
    CancelTaskRequest,
    GetTaskAttemptsRequest,
    ListTaskLogsRequest,
    TaskAttemptPublic,
    TaskLogPage,
)
from ..tasks import (
    ClaimInfo,
    ClaimInfoRequest,
    ClaimReply,
    ClaimRequest,
    CreateTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    TaskPublic,
    WorkerResultReply,
    WorkerResultRequest,
)
from .base import Service, _db_health, _ep


class Scheduler(Service, queue=SCHEDULER):
    CREATE_TASK = _ep(
        CreateTaskRequest,
        TaskPublic,
        "Create a task `queued` (idempotent per `Idempotency-Key`); admission dispatches it later.",
    )
    GET_TASK = _ep(
        GetTaskRequest,
        TaskPublic,
        "One task of the actor's org (404 for another org's).",
        callers=(GATEWAY, VAULT),
    )
    LIST_TASKS = _ep(
        ListTasksRequest,
        Page[TaskPublic],
        "The org's tasks, newest first, cursor-paginated.",
    )
    CLAIM = _ep(
        ClaimRequest,
        ClaimReply,
        "A worker claims the attempt it pulled from TASKS before running it; refused for a cancelled, finished or already-claimed attempt.",
        callers=(WORKER,),
    )
    CLAIM_INFO = _ep(
        ClaimInfoRequest,
        ClaimInfo,
        "Who holds a task's current attempt and which secrets its steps name (the vault asks before a release).",
        callers=(VAULT, WORKER_GATEWAY),
    )
    REPORT_RESULT = _ep(
        WorkerResultRequest,
        WorkerResultReply,
        "A worker that speaks HTTP reports its attempt's result (`POST /workers/tasks/{id}/result`, relayed by "
        "the gateway with the worker's key): recorded as a TASK_UPDATES result would be, only for the attempt "
        "this worker claimed; a repeat changes nothing, a finished or lost attempt is a 409.",
    )
    DB_HEALTH = _db_health("scheduler")
    CANCEL_TASK = _ep(
        CancelTaskRequest,
        TaskPublic,
        "Cancel a task; a running one is told on `tasks.cancel.<task_id>`; a finished one is a 409.",
    )
    ADMIN_LIST_TASKS = _ep(
        AdminListTasksRequest,
        Page[TaskPublic],
        "The org's tasks with filters (status, priority, tags, time), cursor-paginated.",
    )
    TASK_ATTEMPTS = _ep(
        GetTaskAttemptsRequest,
        list[TaskAttemptPublic],
        "Every attempt of a task, oldest first.",
    )
    TASK_LOGS = _ep(
        ListTaskLogsRequest,
        TaskLogPage,
        "A task's log lines after the `since` cursor.",
    )
    CREATE_SCHEDULE = _ep(
        CreateScheduleRequest,
        SchedulePublic,
        "A cron schedule that creates a task at each tick.",
    )
    LIST_SCHEDULES = _ep(
        ListSchedulesRequest,
        list[SchedulePublic],
        "The org's schedules.",
    )
    GET_SCHEDULE = _ep(ById, SchedulePublic, "One schedule of the org.")
    UPDATE_SCHEDULE = _ep(
        UpdateScheduleRequest,
        SchedulePublic,
        "Change, pause or resume a schedule.",
    )
    DELETE_SCHEDULE = _ep(ById, Ack, "Remove a schedule (its tasks stay).")
