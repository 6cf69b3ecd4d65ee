"""The `svc.workers.*` subjects. Thin: parse, open a transaction, call the service, reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    Heartbeat,
    InvitePublic,
    ListWorkersRequest,
    RegisterReply,
    RegisterRequest,
    WorkerAuthRequest,
    WorkerIdentity,
    WorkerPublic,
)
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter

from . import service

if TYPE_CHECKING:
    from .app import WorkerGatewayContext


def build_router(ctx: WorkerGatewayContext) -> NatsRouter:
    router = rpc_router()
    queue = subjects.Workers.QUEUE
    # FastStream handles one message at a time per subscriber unless told otherwise; each handler holds at
    # most one pooled connection, so the pool size bounds how many may run at once.
    in_flight = ctx.settings.db_pool_size

    @router.subscriber(
        subjects.Workers.CREATE_INVITE, queue=queue, max_workers=in_flight, title="workers.create_invite"
    )
    async def create_invite(body: CreateInviteRequest) -> InvitePublic:
        async with ctx.db.transaction() as session:
            return await service.create_invite(session, body.actor, body.invite)

    @router.subscriber(
        subjects.Workers.REGISTER, queue=queue, max_workers=in_flight, title="workers.register"
    )
    async def register(body: RegisterRequest) -> RegisterReply:
        async with ctx.db.transaction() as session:
            return await service.register(session, body)

    @router.subscriber(
        subjects.Workers.HEARTBEAT, queue=queue, max_workers=in_flight, title="workers.heartbeat"
    )
    async def heartbeat(body: Heartbeat) -> Ack:
        async with ctx.db.transaction() as session:
            await service.heartbeat(session, body)
        return Ack()

    @router.subscriber(
        subjects.Workers.AUTHENTICATE, queue=queue, max_workers=in_flight, title="workers.authenticate"
    )
    async def authenticate(body: WorkerAuthRequest) -> WorkerIdentity:
        async with ctx.db.transaction() as session:
            return await service.authenticate(session, body.worker_key)

    @router.subscriber(subjects.Workers.LIST, queue=queue, max_workers=in_flight, title="workers.list")
    async def list_workers(body: ListWorkersRequest) -> list[WorkerPublic]:
        async with ctx.db.transaction() as session:
            return await service.list_workers(
                session, body.actor, offline_after_seconds=ctx.settings.offline_after_seconds
            )

    return router
