"""What every table of the service is read and written by: a row of one organization by its id, and a row
saved (added or changed) and flushed, so that its defaults and constraint errors show at once."""

from __future__ import annotations

from typing import TypeVar

from browserfleet_core.db import AsyncSession
from sqlmodel import SQLModel, col, select

from ..models import WebhookDelivery, WebhookEndpoint, WebhookReplayJob

OrgRow = TypeVar("OrgRow", WebhookDelivery, WebhookEndpoint, WebhookReplayJob)


async def org_row(
    session: AsyncSession, model: type[OrgRow], org_id: str, row_id: str, *, lock: bool = False
) -> OrgRow | None:
    """The row, if it is this organization's (another's reads as none); `lock`: FOR UPDATE."""
    stmt = select(model).where(col(model.org_id) == org_id, col(model.id) == row_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).one_or_none()


async def save(session: AsyncSession, row: SQLModel) -> None:
    session.add(row)
    await session.flush()
