"""The audit log: one entry per state-changing call and per security-relevant event, and the org admins'
keyset-paginated view of it.

A call through the gateway is one entry named by its request id: the gateway opens it (`begin`, committed
before the call reaches the service that changes anything, so no change exists without it) and closes it
(`end`, with the answer's status). A change auth makes itself writes its detail into that same entry, in the
change's own transaction (`record` with an actor carrying the request id); a change with no call behind it
(a sign-in, an event from another service) is an entry of its own. Append-only: no endpoint deletes one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_contracts.auth import AuditEntry, ListAuditRequest, RequestAudit
from browserfleet_contracts.common import Ack, Actor, Page
from browserfleet_core.db import AsyncSession, Database
from browserfleet_core.errors import Invalid
from browserfleet_core.projection import project

from . import repository as repo
from .access import require_admin
from .models import AuditLog, User
from .repository.audit_batch import RequestAuditBatch, outcome_of


async def record(
    session: AsyncSession,
    at: datetime,
    action: str,
    *,
    outcome: str = "success",
    org_id: str | None = None,
    actor: Actor | None = None,
    actor_user_id: str | None = None,
    client_ip: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row, in the caller's transaction: it exists exactly when the change it records does. When
    the actor names the gateway's call, the call's entry takes this detail (once: a second record of the same
    call is a row of its own)."""
    if actor is not None and actor.request_id:
        opened = await repo.audit_of_request(session, actor.org_id, actor.request_id)
        if opened is not None and opened.action.startswith(CALL_PREFIX):
            opened.detail = {**opened.detail, "call": opened.action, **(detail or {})}
            opened.action = action
            if target:
                opened.target = target[:320]
            if outcome != "success":
                opened.outcome = outcome
            await repo.add(session, opened)
            return
    row = AuditLog(
        at=at,
        action=action,
        outcome=outcome,
        org_id=org_id if org_id is not None else (actor.org_id if actor else None),
        actor_user_id=actor_user_id if actor_user_id is not None else (actor.user_id if actor else None),
        actor_api_key_id=actor.api_key_id if actor else None,
        client_ip=(client_ip or (actor.client_ip if actor else None) or None),
        target=target[:320] if target else None,
        detail=detail or {},
        request_id=actor.request_id if actor else None,
    )
    await repo.add(session, row)


async def record_own(
    session: AsyncSession,
    at: datetime,
    action: str,
    user: User,
    *,
    outcome: str = "success",
    client_ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """`record` of what `user` did themselves outside a call through the gateway: a sign-in (or its
    refusal), a second factor."""
    await record(
        session,
        at,
        action,
        outcome=outcome,
        org_id=user.org_id,
        actor_user_id=user.id,
        client_ip=client_ip,
        detail=detail,
    )


CALL_PREFIX = "api."


def _opened(at: datetime, req: RequestAudit) -> dict[str, Any]:
    """The columns of a call's entry as the gateway opens it."""
    actor = req.actor
    return {
        "at": at,
        "action": req.action,
        "outcome": "pending",
        "org_id": actor.org_id,
        "actor_user_id": actor.user_id,
        "actor_api_key_id": actor.api_key_id,
        "client_ip": actor.client_ip,
        "target": req.target[:320] if req.target else None,
        "detail": {"path": req.path} if req.path else {},
        "request_id": actor.request_id,
        "route": req.route,
    }


async def record_request_at_once(db: Database, at: datetime, req: RequestAudit) -> Ack:
    """`record_request` for every state-changing call, twice a call: its common cases (a new call's entry
    opened; an open entry closed) are written by `RequestAuditBatch`, one statement for all the records in
    hand at once, without the transaction's BEGIN, SELECT ... FOR UPDATE and COMMIT round trips; anything
    else (a repeated phase, a call refused before it was opened, an entry auth wrote first) takes
    `record_request`."""
    if RequestAuditBatch.takes(req) and await RequestAuditBatch.of(db).write(at, req):
        return Ack()
    return await db.run(record_request, at, req)


async def record_request(session: AsyncSession, at: datetime, req: RequestAudit) -> Ack:
    """The gateway's entry of one call: `begin` opens it (pending), `end` closes it with the answer; an
    `end` with nothing opened (refused before it began) writes it whole. Repeated phases change nothing."""
    actor = req.actor
    if not actor.request_id:
        raise Invalid("actor.request_id: the call's request id is required", field="actor.request_id")
    entry = await repo.audit_of_request(session, actor.org_id, actor.request_id)
    if entry is None:
        entry = AuditLog(**_opened(at, req))
    elif entry.route is None:
        entry.route = req.route  # auth recorded its detail first (a call the gateway did not open)
    if req.phase == "end" and req.status is not None and entry.status is None:
        entry.status = req.status
        if entry.outcome in ("pending", "success"):
            entry.outcome = outcome_of(req.status)
        if req.code and req.status >= 400:
            entry.detail = {**entry.detail, "code": req.code}
        if entry.target is None and req.target:
            entry.target = req.target[:320]
    await repo.add(session, entry)
    return Ack()


async def list_audit(session: AsyncSession, req: ListAuditRequest) -> Page[AuditEntry]:
    require_admin(req.actor)
    before: int | None = None
    if req.cursor:
        if not req.cursor.isdigit():
            raise Invalid("cursor: not a cursor from this list", field="cursor")
        before = int(req.cursor)
    rows = await repo.list_audit(session, req, before_id=before, limit=req.limit + 1)
    items = [audit_public(r) for r in rows[: req.limit]]
    more = len(rows) > req.limit
    return Page[AuditEntry](items=items, next_cursor=str(items[-1].id) if more and items else None)


def audit_public(row: AuditLog) -> AuditEntry:
    assert row.id is not None
    return project(AuditEntry, row)
