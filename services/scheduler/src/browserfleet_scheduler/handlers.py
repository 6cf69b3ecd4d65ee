"""The subjects the scheduler serves. Thin: each runs one service call in a transaction and replies."""

from __future__ import annotations

import logging

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Ack, ById
from browserfleet_contracts.task_admin import CancelTaskRequest
from browserfleet_contracts.tasks import (
    ClaimReply,
    ClaimRequest,
    CreateTaskRequest,
    TaskPublic,
    TaskUpdateMessage,
    WorkerResultReply,
    WorkerResultRequest,
)
from browserfleet_core import dbhealth
from browserfleet_core.batching import (
    BatchConsumer,
    documentation_router,
    durable_config,
    parse_batch,
    record_each_or_all,
)
from browserfleet_core.lean import LeanRpc
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from . import cancellation, claims, creation, outcomes, queries, schedules, senders, worker_results
from .runtime import Runtime

log = logging.getLogger(__name__)

UPDATES_DURABLE = "scheduler"


def build_lean(rt: Runtime, *, rpc_workers: int = 16, app_name: str = "scheduler") -> LeanRpc:
    """The hot subjects (every task passes through create_task, claim and claim_info, and the gateway's
    read path through get_task), served by `LeanResponder`s rather than FastStream subscribers: FastStream's
    per-message machinery was ~18 % of the scheduler's CPU under load. Same replies and errors."""
    lean = LeanRpc(max_concurrency=rpc_workers, app_name=app_name)

    @lean.route(endpoints.Scheduler.CREATE_TASK)
    async def create_task(body: CreateTaskRequest) -> TaskPublic:
        task = await creation.create_task_now(
            rt.db, rt.relay, body, rt.policy, await rt.registered_pools_now()
        )
        if task.status == "queued":  # else admitted in its create: no pass needed
            rt.wake.set()
        return task

    # a route that is one call takes its types from the endpoint, as `RpcRouter.serve` does
    lean.route(endpoints.Scheduler.GET_TASK)(lambda body: queries.read_task(rt.db, body))

    @lean.route(endpoints.Scheduler.CLAIM)
    async def claim(body: ClaimRequest) -> ClaimReply:
        # authenticate before the row lock: a slow worker-gateway must not hold the task locked
        identity = await rt.workers.authenticate(body.worker_key)
        reply = await claims.claim_now(rt.db, rt.relay, body, identity, rt.policy)
        if not reply.granted:
            rt.wake.set()  # a lost attempt went back to the queue
        return reply

    lean.route(endpoints.Scheduler.CLAIM_INFO)(lambda body: rt.db.run(claims.claim_info, body))

    return lean


def build_routers(rt: Runtime, *, rpc_workers: int = 16) -> list[NatsRouter]:
    """Every other request/reply subject (FastStream subscribers); the hot ones are in `build_lean`."""
    # a core subscriber handles one request at a time unless given workers; a slow claim waiting on a
    # row lock must not hold up every other request
    rpc = rpc_router(max_workers=rpc_workers)
    rpc.serve(endpoints.Scheduler.LIST_TASKS, lambda body: rt.db.run(queries.list_tasks, body))
    rpc.serve(endpoints.Scheduler.ADMIN_LIST_TASKS, lambda body: rt.db.run(queries.admin_list_tasks, body))
    rpc.serve(endpoints.Scheduler.TASK_ATTEMPTS, lambda body: rt.db.run(queries.task_attempts, body))
    rpc.serve(endpoints.Scheduler.TASK_LOGS, lambda body: rt.db.run(queries.task_logs, body))
    rpc.serve(endpoints.Scheduler.CREATE_SCHEDULE, lambda body: rt.db.run(schedules.create_schedule, body))
    rpc.serve(endpoints.Scheduler.LIST_SCHEDULES, lambda body: rt.db.run(schedules.list_schedules, body))
    rpc.serve(endpoints.Scheduler.GET_SCHEDULE, lambda body: rt.db.run(schedules.get_schedule, body))
    rpc.serve(endpoints.Scheduler.UPDATE_SCHEDULE, lambda body: rt.db.run(schedules.update_schedule, body))
    rpc.serve(endpoints.Scheduler.DB_HEALTH, lambda body: dbhealth.db_health(rt.db))

    @rpc.handle(endpoints.Scheduler.CANCEL_TASK)
    async def cancel_task(body: CancelTaskRequest) -> TaskPublic:
        task, was_running = await rt.db.run(cancellation.cancel_task, rt.relay, body)
        if was_running:
            await rt.cancel_signal(task.id)
        rt.wake.set()
        return task

    @rpc.handle(endpoints.Scheduler.REPORT_RESULT)
    async def report_result(body: WorkerResultRequest) -> WorkerResultReply:
        # authenticate before the row lock, as a claim does
        identity = await rt.workers.authenticate(body.worker_key)
        reply = await rt.db.run(worker_results.report_result, rt.relay, body, identity, rt.policy)
        if reply.recorded:
            rt.wake.set()  # a slot of the org's concurrency is free again
        return reply

    @rpc.handle(endpoints.Scheduler.DELETE_SCHEDULE)
    async def delete_schedule(body: ById) -> Ack:
        await rt.db.run(schedules.delete_schedule, body)
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
    """The batch at once (`outcomes.record_updates`: one statement for its results, one transaction for the
    rest); if that fails, one update at a time, so a poisoned update (or a row it
    cannot write) fails alone and is nak'ed (after `redelivery_seconds`, so a database outage is not a hot
    loop) while the rest are recorded. A payload that can never parse is terminated. Messages left
    unsettled are acked by the BatchConsumer when this returns."""
    # `started` needs nothing: the claim already moved the task to running
    # an update must come from the worker it names (its subject's); refused ones are acked untouched
    parsed = [
        (m, u)
        for m, u in await parse_batch(msgs, TaskUpdateMessage)
        if u.kind != "started" and senders.from_its_sender(m, u)
    ]

    async def record(updates: list[TaskUpdateMessage]) -> bool:
        return await outcomes.record_updates(rt.db, rt.relay, updates, rt.policy)

    changed = any(
        await record_each_or_all(parsed, record, nak_delay=rt.redelivery_seconds, what="task update")
    )
    if changed:
        rt.wake.set()  # a slot of the org's concurrency is free again
