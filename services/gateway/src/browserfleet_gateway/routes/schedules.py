"""Cron schedules: each tick creates a task from the schedule's template.

The scheduler scopes every query by the actor's org, so another org's schedule is a 404.
"""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.endpoints import Endpoint, Req
from browserfleet_contracts.schedules import (
    CreateScheduleRequest,
    ScheduleCreate,
    SchedulePublic,
    ScheduleUpdate,
    UpdateScheduleRequest,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Depends, Response
from starlette import status as http

from .. import intake
from ..deps import IdPath, Principal, RpcDep, TasksRead, access
from ..errors import API_ERRORS
from ..replies import rpc_route

# Schedules are read like tasks and changed by admins (the scheduler checks that too); an API key acts with
# the rule's role for the one call.
SchedulesWrite = Annotated[Principal, Depends(access("admin", scope="tasks:write"))]

router = APIRouter(prefix="/admin/schedules", tags=["admin", "schedules"], responses=API_ERRORS)


async def _scheduler(rpc: RpcClient, endpoint: Endpoint[Req, SchedulePublic], request: Req) -> SchedulePublic:
    """The scheduler names fields of its request (`schedule.cron`); the client sent the schedule itself."""
    try:
        return await rpc.call(endpoint, request)
    except ServiceError as exc:
        if exc.field and exc.field.startswith("schedule."):
            exc.field = exc.field.removeprefix("schedule.")
            exc.message = exc.message.replace("schedule.", "", 1)
        raise


async def _update(rpc: RpcClient, actor: Actor, schedule_id: str, body: ScheduleUpdate) -> SchedulePublic:
    request = UpdateScheduleRequest(actor=actor, id=schedule_id, schedule=body)
    return await _scheduler(rpc, endpoints.Scheduler.UPDATE_SCHEDULE, request)


@router.post(
    "",
    response_model=SchedulePublic,
    status_code=http.HTTP_201_CREATED,
    summary="Create a cron schedule that creates a task from `task` at every tick",
)
async def create_schedule(
    body: ScheduleCreate, principal: SchedulesWrite, rpc: RpcDep, response: Response
) -> SchedulePublic:
    await intake.check_template(rpc, principal.actor, body.task, "task.")
    created = await _scheduler(
        rpc,
        endpoints.Scheduler.CREATE_SCHEDULE,
        CreateScheduleRequest(actor=principal.actor, schedule=body),
    )
    response.headers["Location"] = f"/admin/schedules/{created.id}"
    return created


rpc_route(
    router,
    "GET",
    "",
    endpoints.Scheduler.LIST_SCHEDULES,
    TasksRead,
    name="list_schedules",
    summary="The organization's schedules",
)


@router.get("/{schedule_id}", response_model=SchedulePublic, summary="One schedule")
async def get_schedule(schedule_id: IdPath, principal: TasksRead, rpc: RpcDep) -> SchedulePublic:
    return await _scheduler(
        rpc, endpoints.Scheduler.GET_SCHEDULE, ById(actor=principal.actor, id=schedule_id)
    )


@router.put(
    "/{schedule_id}",
    response_model=SchedulePublic,
    summary="Change a schedule; the fields given replace the stored ones",
)
async def update_schedule(
    schedule_id: IdPath, body: ScheduleUpdate, principal: SchedulesWrite, rpc: RpcDep
) -> SchedulePublic:
    if body.task is not None:
        await intake.check_template(rpc, principal.actor, body.task, "task.")
    return await _update(rpc, principal.actor, schedule_id, body)


@router.post("/{schedule_id}/pause", response_model=SchedulePublic, summary="Pause a schedule: no ticks fire")
async def pause_schedule(schedule_id: IdPath, principal: SchedulesWrite, rpc: RpcDep) -> SchedulePublic:
    return await _update(rpc, principal.actor, schedule_id, ScheduleUpdate(paused=True))


@router.post(
    "/{schedule_id}/resume",
    response_model=SchedulePublic,
    summary="Resume a schedule from its next future tick (missed ticks are not fired)",
)
async def resume_schedule(schedule_id: IdPath, principal: SchedulesWrite, rpc: RpcDep) -> SchedulePublic:
    return await _update(rpc, principal.actor, schedule_id, ScheduleUpdate(paused=False))


rpc_route(
    router,
    "DELETE",
    "/{schedule_id}",
    endpoints.Scheduler.DELETE_SCHEDULE,
    SchedulesWrite,
    status_code=http.HTTP_204_NO_CONTENT,
    name="delete_schedule",
    summary="Delete a schedule (tasks it already created stay)",
)
