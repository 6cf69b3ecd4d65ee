"""The subjects the scheduler serves. Thin: parse, open a transaction, call the service, reply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

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
from browserfleet_core.batching import (
    BatchConsumer,
    documentation_router,
    durable_config,
    parse_batch,
    record_each_or_all,
)
from browserfleet_core.db import Database
from browserfleet_core.messaging import LeanRpc, rpc_router
from browserfleet_core.outbox import OutboxRelay
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

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


def build_lean(rt: Runtime, *, rpc_workers: int = 16, app_name: str = "scheduler") -> LeanRpc:
    """The hot subjects (every task passes through create_task, claim and claim_info, and the gateway's
    read path through get_task), served by `LeanResponder`s rather than FastStream subscribers: FastStream's
    per-message machinery was ~18 % of the scheduler's CPU under load. Same replies and errors."""
    lean = LeanRpc(queue=subjects.Scheduler.QUEUE, max_concurrency=rpc_workers, app_name=app_name)

    @lean.route(subjects.Scheduler.CREATE_TASK, CreateTaskRequest, TaskPublic, title="scheduler.create_task")
    async def create_task(body: CreateTaskRequest) -> TaskPublic:
        db, relay = rt.parts()
        async with db.transaction() as session:
            task = await service.create_task(session, relay, body)
        rt.wake.set()
        return task

    @lean.route(subjects.Scheduler.GET_TASK, GetTaskRequest, TaskPublic, title="scheduler.get_task")
    async def get_task(body: GetTaskRequest) -> TaskPublic:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.get_task(session, body)

    @lean.route(subjects.Scheduler.CLAIM, ClaimRequest, ClaimReply, title="scheduler.claim")
    async def claim(body: ClaimRequest) -> ClaimReply:
        db, relay = rt.parts()
        # authenticate before the row lock: a slow worker-gateway must not hold the task locked
        identity = await rt.workers().authenticate(body.worker_key)
        async with db.transaction() as session:
            reply = await service.claim(session, relay, body, identity, rt.policy)
        if not reply.granted:
            rt.wake.set()  # a lost attempt went back to the queue
        return reply

    @lean.route(subjects.Scheduler.CLAIM_INFO, ClaimInfoRequest, ClaimInfo, title="scheduler.claim_info")
    async def claim_info(body: ClaimInfoRequest) -> ClaimInfo:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.claim_info(session, body)

    return lean


def build_routers(rt: Runtime, *, rpc_workers: int = 16) -> list[NatsRouter]:
    """Every other request/reply subject (FastStream subscribers); the hot ones are in `build_lean`."""
    rpc = rpc_router()
    queue = subjects.Scheduler.QUEUE
    # a core subscriber handles one request at a time unless given workers; a slow claim waiting on a
    # row lock must not hold up every other request

    @rpc.subscriber(
        subjects.Scheduler.LIST_TASKS, queue=queue, max_workers=rpc_workers, title="scheduler.list_tasks"
    )
    async def list_tasks(body: ListTasksRequest) -> Page[TaskPublic]:
        db, _ = rt.parts()
        async with db.transaction() as session:
            return await service.list_tasks(session, body)

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

    return [rpc]


UPDATES_CONFIG = durable_config(UPDATES_DURABLE, subjects.TASK_UPDATES_ALL, max_ack_pending=2000)
UPDATES_TITLE = "scheduler.task_updates"
UPDATES_DESCRIPTION = (
    "Worker reports (started, log, result) on TASK_UPDATES, one durable shared by every scheduler replica. "
    "Consumed in batches (browserfleet_core.batching.BatchConsumer): everything waiting is recorded in one "
    "transaction, then acked; a batch that fails is retried one update per transaction, and an update "
    "that fails alone is nak'ed for redelivery."
)


def updates_doc_router() -> NatsRouter:
    """Describes the TASK_UPDATES consumer for AsyncAPI (at run time it is a BatchConsumer, not a subscriber)."""
    return documentation_router(
        subjects.TASK_UPDATES_ALL,
        stream=subjects.TASK_UPDATES_STREAM,
        durable=UPDATES_DURABLE,
        payload=TaskUpdateMessage,
        title=UPDATES_TITLE,
        description=UPDATES_DESCRIPTION,
        config=UPDATES_CONFIG,
    )


def build_updates_consumer(rt: Runtime, nc: NatsClient, *, max_batch: int = 64) -> BatchConsumer:
    async def on_updates(msgs: list[Msg]) -> None:
        await record_updates(rt, msgs)

    return BatchConsumer(
        nc,
        stream=subjects.TASK_UPDATES_STREAM,
        durable=UPDATES_DURABLE,
        handler=on_updates,
        config=UPDATES_CONFIG,
        max_batch=max_batch,
    )


async def record_updates(rt: Runtime, msgs: list[Msg]) -> None:
    """One transaction for the batch; if it fails, one per update, so a poisoned update (or a row it
    cannot write) fails alone and is nak'ed (after `redelivery_seconds`, so a database outage is not a hot
    loop) while the rest are recorded. A payload that can never parse is terminated. Messages left
    unsettled are acked by the BatchConsumer when this returns."""
    db, relay = rt.parts()
    # `started` needs nothing: the claim already moved the task to running
    parsed = [(m, u) for m, u in await parse_batch(msgs, TaskUpdateMessage) if u.kind != "started"]

    async def record(updates: list[TaskUpdateMessage]) -> bool:
        async with db.transaction() as session:
            return await service.apply_updates(session, relay, updates, rt.policy)

    changed = any(
        await record_each_or_all(parsed, record, nak_delay=rt.redelivery_seconds, what="task update")
    )
    if changed:
        rt.wake.set()  # a slot of the org's concurrency is free again
