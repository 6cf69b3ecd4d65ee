"""The `svc.workers.*` subjects: each runs its service call in a transaction of its own, then sends what the
commit implies (a broadcast, a drain request, a new pool's consumers)."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Ack, ById
from browserfleet_contracts.workers import DeregisterRequest, RegisterReply, RegisterRequest, WorkerPublic
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter

from . import invites, lifecycle, pools, presence, registration
from .runtime import WorkerGatewayRuntime


def build_router(rt: WorkerGatewayRuntime) -> NatsRouter:
    # FastStream handles one message at a time per subscriber unless told otherwise; each handler holds at
    # most one pooled connection, so the pool size bounds how many may run at once.
    router = rpc_router(max_workers=rt.settings.db_pool_size)
    serve = router.serve
    W = endpoints.Workers

    serve(W.CREATE_INVITE, lambda body: rt.db.run(invites.create_invite, body.actor, body.invite))
    serve(W.LIST_INVITES, lambda body: rt.db.run(invites.list_invites, body.actor))
    serve(W.REVOKE_INVITE, lambda body: rt.db.run(invites.revoke_invite, body))

    @router.handle(W.REGISTER)
    async def register(body: RegisterRequest) -> RegisterReply:
        reply = await rt.db.run(registration.register, body)
        await rt.ensure_pool(reply.pool)
        return reply

    serve(W.ROTATE_KEY, lambda body: rt.db.run(registration.rotate_key, body))
    serve(W.HEARTBEAT, lambda body: rt.db.run(presence.heartbeat, rt.relay, body))
    serve(
        W.STATUS,
        lambda body: rt.db.run(
            presence.report_status, rt.relay, body, offline_after_seconds=rt.offline_after
        ),
    )

    @router.handle(W.DEREGISTER)
    async def deregister(body: DeregisterRequest) -> Ack:
        await rt.announce_revoked(await rt.db.run(registration.deregister, rt.relay, body))
        return Ack()

    serve(W.AUTHENTICATE, lambda body: rt.db.run(registration.authenticate, body.worker_key))
    serve(
        W.LIST,
        lambda body: rt.db.run(presence.list_workers, body.actor, offline_after_seconds=rt.offline_after),
    )

    @router.handle(W.DRAIN)
    async def drain(body: ById) -> WorkerPublic:
        worker = await rt.db.run(lifecycle.drain, rt.relay, body, offline_after_seconds=rt.offline_after)
        await rt.ask_drain(worker.id)
        return worker

    @router.handle(W.REVOKE)
    async def revoke(body: ById) -> Ack:
        await rt.announce_revoked(await rt.db.run(lifecycle.revoke, rt.relay, body))
        return Ack()

    serve(W.POOLS, lambda body: rt.db.run(pools.registry, offline_after_seconds=rt.offline_after))

    return router
