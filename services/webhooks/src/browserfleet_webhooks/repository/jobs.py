"""Replay jobs: a row per bulk replay, advanced step by step by whichever replica takes it."""

from __future__ import annotations

from browserfleet_core.db import AsyncSession
from sqlmodel import col, select

from ..models import JOB_RUNNING, WebhookReplayJob
from .rows import org_row


async def get_job(session: AsyncSession, org_id: str, job_id: str) -> WebhookReplayJob | None:
    return await org_row(session, WebhookReplayJob, org_id, job_id)


async def next_running_job(session: AsyncSession) -> WebhookReplayJob | None:
    """The oldest running job no other replica is advancing right now (locked until the step commits)."""
    stmt = (
        select(WebhookReplayJob)
        .where(col(WebhookReplayJob.status) == JOB_RUNNING)
        .order_by(col(WebhookReplayJob.created_at), col(WebhookReplayJob.id))
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await session.exec(stmt)).one_or_none()
