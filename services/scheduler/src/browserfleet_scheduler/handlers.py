"""The subjects the scheduler serves. Thin: parse, open a transaction, call the service, reply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack, ById, Page
from browserfleet_contracts.schedules import (
    CreateScheduleRequest,
    ListSchedulesRequest,
    SchedulePublic,
    UpdateScheduleRequest,
)
from browserfleet_contracts.task_admin import (
    AdminListTasksRequest,
    CancelTaskRequest,
    GetTaskAttemptsRequest,
    ListTaskLogsRequest,
    TaskAttemptPublic,
    TaskLogPage,
)
from browserfleet_contracts.tasks import (
    ClaimInfo,
    ClaimInfoRequest,
    ClaimReply,
    ClaimRequest,
    CreateTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    TaskPublic,
    TaskUpdateMessage,
)
from browserfleet_core.db import Database
from browserfleet_core.messaging import rpc_router
from browserfleet_core.outbox import OutboxRelay
from faststream import AckPolicy
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from faststream.nats import JStream, NatsRouter, PullSub
from pydantic import ValidationError

from . import schedules, service
from .service import Policy, WorkerAuthenticator

log = logging.getLogger(__name__)

UPDATES_DURABLE = "scheduler"


@dataclass
class Runtime:
    """What the handlers need once the service has started. Empty while only the broker's shape is
    wanted (AsyncAPI generation), which is why the fields are optional."""

    db: Database | None = None
    relay: OutboxRelay | None = None
    authenticator: WorkerAuthenticator | None = None
    redelivery_seconds: float = 2.0
    policy: Policy = field(default_factory=Policy)
    # set after a commit that may let admission do something (a new task, a finished one)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # sends `tasks.cancel.<task_id>` to whichever worker runs it (core NATS)
    signal_cancel: Callable[[str], Awaitable[None]] | None = None

    async def cancel_signal(self, task_id: str) -> None:
        if self.signal_cancel is not None:
            try:
                await self.signal_cancel(task_id)
            except Exception:
                log.exception("sending the cancel signal of %s failed", task_id)

    def parts(self) -> tuple[Database, OutboxRelay]:
        if self.db is None or self.relay is None:
            raise RuntimeError("scheduler runtime not started")
        return self.db, self.relay

    def workers(self) -> WorkerAuthenticator:
        if self.authenticator is None:
            raise RuntimeError("scheduler runtime not started")
        return self.authenticator


class _RedeliverOnError:
    """Consumer middleware for TASK_UPDATES: a failure nacks the message (with a delay, so a database
    outage does not become a hot loop) and a payload that can never parse is terminated, because
    redelivering it cannot help."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __call__(self, msg: Any, /, *, context: Any) -> BaseMiddleware:
        runtime = self.runtime

        class _Middleware(BaseMiddleware):
            async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
                try:
                    return await call_next(msg)
                except HandlerException:
                    raise
                except ValidationError as exc:
                    log.error("malformed task update dropped: %s", exc.errors(include_input=False)[:3])
                    raise RejectMessage from exc
                except Exception as exc:
                    log.exception("task update handling failed; it will be redelivered")
                    raise NackMessage(delay=runtime.redelivery_seconds) from exc

        return _Middleware(msg, context=context)


def build_routers(rt: Runtime, *, rpc_workers: int = 16) -> list[NatsRouter]:
    rpc = rpc_router()
    queue = subjects.Scheduler.QUEUE
    # a core subscriber handles one request at a time unless given workers; a slow claim waiting on a
    # row lock must not hold up every other request

    @rpc.subscriber(
        subjects.Scheduler.CREATE_TASK, queue=queue, max_workers=rpc_workers, title="scheduler.create_task"
    )
    async def create_task(body: CreateTaskRequest) -> TaskPublic:
        db, relay = rt.parts()
        async with db.transaction() as session:
            task = await service.create_task(session, relay, body)
        rt.wake.set()
        return task

    @rpc.subscriber(
        subjects.Scheduler.GET_TASK, queue=queue, max_workers=rpc_workers, title="scheduler.get_task"
    )
    async def get_task(body: GetTaskRequest) -> TaskPublic:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.get_task(session, body)

    @rpc.subscriber(
        subjects.Scheduler.LIST_TASKS, queue=queue, max_workers=rpc_workers, title="scheduler.list_tasks"
    )
    async def list_tasks(body: ListTasksRequest) -> Page[TaskPublic]:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.list_tasks(session, body)

    @rpc.subscriber(subjects.Scheduler.CLAIM, queue=queue, max_workers=rpc_workers, title="scheduler.claim")
    async def claim(body: ClaimRequest) -> ClaimReply:
        db, relay = rt.parts()
        # authenticate before the row lock: a slow worker-gateway must not hold the task locked
        identity = await rt.workers().authenticate(body.worker_key)
        async with db.transaction() as session:
            reply = await service.claim(session, relay, body, identity, rt.policy)
        if not reply.granted:
            rt.wake.set()  # a lost attempt went back to the queue
        return reply

    @rpc.subscriber(
        subjects.Scheduler.CLAIM_INFO, queue=queue, max_workers=rpc_workers, title="scheduler.claim_info"
    )
    async def claim_info(body: ClaimInfoRequest) -> ClaimInfo:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.claim_info(session, body)

    @rpc.subscriber(
        subjects.Scheduler.CANCEL_TASK, queue=queue, max_workers=rpc_workers, title="scheduler.cancel_task"
    )
    async def cancel_task(body: CancelTaskRequest) -> TaskPublic:
        db, relay = rt.parts()
        async with db.transaction() as session:
            task, was_running = await service.cancel_task(session, relay, body)
        if was_running:
            await rt.cancel_signal(task.id)
        rt.wake.set()
        return task

    @rpc.subscriber(
        subjects.Scheduler.ADMIN_LIST_TASKS,
        queue=queue,
        max_workers=rpc_workers,
        title="scheduler.admin_list_tasks",
    )
    async def admin_list_tasks(body: AdminListTasksRequest) -> Page[TaskPublic]:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.admin_list_tasks(session, body)

    @rpc.subscriber(
        subjects.Scheduler.TASK_ATTEMPTS,
        queue=queue,
        max_workers=rpc_workers,
        title="scheduler.task_attempts",
    )
    async def task_attempts(body: GetTaskAttemptsRequest) -> list[TaskAttemptPublic]:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.task_attempts(session, body)

    @rpc.subscriber(
        subjects.Scheduler.TASK_LOGS, queue=queue, max_workers=rpc_workers, title="scheduler.task_logs"
    )
    async def task_logs(body: ListTaskLogsRequest) -> TaskLogPage:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.task_logs(session, body)

    @rpc.subscriber(
        subjects.Scheduler.CREATE_SCHEDULE,
        queue=queue,
        max_workers=rpc_workers,
        title="scheduler.create_schedule",
    )
    async def create_schedule(body: CreateScheduleRequest) -> SchedulePublic:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await schedules.create_schedule(session, body)

    @rpc.subscriber(
        subjects.Scheduler.LIST_SCHEDULES,
        queue=queue,
        max_workers=rpc_workers,
        title="scheduler.list_schedules",
    )
    async def list_schedules(body: ListSchedulesRequest) -> list[SchedulePublic]:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await schedules.list_schedules(session, body)

    @rpc.subscriber(
        subjects.Scheduler.GET_SCHEDULE, queue=queue, max_workers=rpc_workers, title="scheduler.get_schedule"
    )
    async def get_schedule(body: ById) -> SchedulePublic:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await schedules.get_schedule(session, body)

    @rpc.subscriber(
        subjects.Scheduler.UPDATE_SCHEDULE,
        queue=queue,
        max_workers=rpc_workers,
        title="scheduler.update_schedule",
    )
    async def update_schedule(body: UpdateScheduleRequest) -> SchedulePublic:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await schedules.update_schedule(session, body)

    @rpc.subscriber(
        subjects.Scheduler.DELETE_SCHEDULE,
        queue=queue,
        max_workers=rpc_workers,
        title="scheduler.delete_schedule",
    )
    async def delete_schedule(body: ById) -> Ack:
        db, _ = rt.parts()
        async with db.transaction() as session:
            await schedules.delete_schedule(session, body)
        return Ack()

    # JetStream consumers stay off the rpc router: their errors must reach the ack policy, not a reply.
    updates = NatsRouter(middlewares=[_RedeliverOnError(rt)])

    @updates.subscriber(
        subjects.TASK_UPDATES_ALL,
        stream=JStream(subjects.TASK_UPDATES_STREAM, declare=False),
        # one durable pull consumer shared by every replica: each update goes to one of them
        durable=UPDATES_DURABLE,
        # fetch(1) hands each update over the moment it arrives: nats-py's fetch(batch>1) holds the first
        # message until the batch fills or the timeout ends whenever nothing was waiting at request time.
        # max_workers keeps 16 updates in flight at once; each is acked after its own commit.
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        max_workers=16,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="scheduler.task_updates",
    )
    async def on_task_update(body: TaskUpdateMessage) -> None:
        if body.kind == "started":
            return  # the claim already moved the task to running: no transaction for nothing
        db, relay = rt.parts()
        async with db.transaction() as session:
            changed = await service.apply_update(session, relay, body)
        if changed:
            rt.wake.set()  # a slot of the org's concurrency is free again

    return [rpc, updates]
