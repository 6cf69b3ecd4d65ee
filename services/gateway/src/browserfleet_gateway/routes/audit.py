"""The organization's audit log (admins): a page, or the whole filtered log as JSON lines. Read-only: entries
are written by the calls themselves (audittrail) and by auth; no route changes or deletes one. The org is the
caller's, never a parameter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import AuditEntry, AuditOutcome, ListAuditRequest
from browserfleet_contracts.common import Page
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ..deps import OrgAdmin, RpcDep
from ..errors import API_ERRORS

router = APIRouter(prefix="/admin/audit-log", tags=["admin"], responses=API_ERRORS)

# PostgreSQL text holds no NUL: a filter with one is refused here (422), not a 500 from the database
_NO_NUL = r"^[^\x00]*$"
_Action = Annotated[
    str | None,
    Query(max_length=64, pattern=_NO_NUL, description="e.g. `user.role_changed`, `api.create_task`"),
]
_Outcome = Annotated[AuditOutcome | None, Query()]
_ActorId = Annotated[
    str | None, Query(max_length=64, pattern=_NO_NUL, description="a user's or an API key's id")
]
_Target = Annotated[str | None, Query(max_length=320, pattern=_NO_NUL, description="the id acted on")]
_RequestId = Annotated[str | None, Query(max_length=64, pattern=_NO_NUL, description="a call's X-Request-ID")]


class _Filters(BaseModel):
    """What the page and the export both filter on; each adds its own after these."""

    action: _Action = None
    outcome: _Outcome = None
    actor_id: _ActorId = None
    target: _Target = None


class _PageQuery(_Filters):
    request_id: _RequestId = None
    since: datetime | None = None
    until: datetime | None = None
    limit: Annotated[int, Query(ge=1, le=1000)] = 100
    cursor: Annotated[str | None, Query(max_length=40)] = None


class _ExportQuery(_Filters):
    since: datetime | None = None
    until: datetime | None = None


@router.get("", response_model=Page[AuditEntry], summary="The audit log, newest first")
async def audit_log(
    principal: OrgAdmin, rpc: RpcDep, query: Annotated[_PageQuery, Query()]
) -> Page[AuditEntry]:
    request = ListAuditRequest(actor=principal.actor, **query.model_dump())
    return await rpc.call(endpoints.Auth.LIST_AUDIT, request)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one JSON entry per line"}},
    summary="Export the audit log as JSON lines (same filters), page by page",
)
async def export_audit_log(
    principal: OrgAdmin, rpc: RpcDep, query: Annotated[_ExportQuery, Query()]
) -> StreamingResponse:
    first = ListAuditRequest(actor=principal.actor, limit=1000, **query.model_dump())
    page: Page[AuditEntry] = await rpc.call(endpoints.Auth.LIST_AUDIT, first)
    return StreamingResponse(
        _lines(rpc, first, page),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit-log.jsonl"'},
    )


async def _lines(rpc: RpcClient, request: ListAuditRequest, page: Page[AuditEntry]) -> AsyncIterator[bytes]:
    while True:
        for entry in page.items:
            yield entry.model_dump_json().encode() + b"\n"
        if page.next_cursor is None:
            return
        request = request.model_copy(update={"cursor": page.next_cursor})
        page = await rpc.call(endpoints.Auth.LIST_AUDIT, request)
