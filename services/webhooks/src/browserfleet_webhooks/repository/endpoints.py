"""Endpoints: the admin-registered ones and the implicit `task_url` ones, their health and circuit."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from browserfleet_core.db import AsyncSession, new_id
from sqlalchemy import String, any_, bindparam, case, delete, func, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlmodel import col, select

from ..models import ENDPOINT, TASK_URL, WebhookEndpoint
from .rows import org_row


async def list_endpoints(session: AsyncSession, org_id: str) -> Sequence[WebhookEndpoint]:
    stmt = (
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.org_id) == org_id)
        .order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
    )
    return (await session.exec(stmt)).all()


async def get_endpoint(
    session: AsyncSession, org_id: str, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint | None:
    return await org_row(session, WebhookEndpoint, org_id, endpoint_id, lock=lock)


async def delete_endpoint(session: AsyncSession, org_id: str, endpoint_id: str) -> bool:
    stmt = delete(WebhookEndpoint).where(
        col(WebhookEndpoint.org_id) == org_id, col(WebhookEndpoint.id) == endpoint_id
    )
    result = await session.exec(stmt)
    return bool(result.rowcount)


@dataclass(frozen=True)
class EndpointFilter:
    """An enabled endpoint and the event filters it subscribed to."""

    id: str
    org_id: str
    events: list[str]


# built once: composing the statement per batch cost more CPU than running it
_ENDPOINTS_FOR_EVENTS = select(
    col(WebhookEndpoint.id), col(WebhookEndpoint.org_id), col(WebhookEndpoint.events)
).where(
    col(WebhookEndpoint.org_id) == any_(bindparam("org_ids", type_=ARRAY(String))),
    col(WebhookEndpoint.enabled).is_(True),
    col(WebhookEndpoint.kind) == ENDPOINT,
    col(WebhookEndpoint.events).op("?|")(bindparam("filters", type_=ARRAY(String))),
)


async def endpoints_for_events(
    session: AsyncSession, org_ids: Collection[str], filters: Collection[str]
) -> list[EndpointFilter]:
    """One query for a batch of events: the enabled endpoints of `org_ids` whose filter list contains any
    of `filters`. A superset: the caller pairs each event with its own org's endpoints and its own filters."""
    if not org_ids or not filters:
        return []
    params = {"org_ids": sorted(org_ids), "filters": sorted(filters)}
    rows = (await session.exec(_ENDPOINTS_FOR_EVENTS, params=params)).all()
    return [EndpointFilter(id=r[0], org_id=r[1], events=list(r[2])) for r in rows]


async def ensure_task_url_endpoints(
    session: AsyncSession, targets: Collection[tuple[str, str]], *, now: datetime
) -> dict[tuple[str, str], tuple[str, bool]]:
    """The implicit endpoint of each (org_id, url) tasks named as `webhook_url`, made on first use (one per
    URL of an org, however many tasks name it). Returns (id, enabled) per (org_id, url)."""
    if not targets:
        return {}
    rows = [
        {
            "id": new_id(),
            "org_id": org_id,
            "kind": TASK_URL,
            "url": url,
            "events": [],
            "description": "tasks' webhook_url",
            "enabled": True,
            "consecutive_failures": 0,
            "created_at": now,
        }
        for org_id, url in sorted(targets)
    ]
    await session.exec(
        insert(WebhookEndpoint)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["org_id", "url"], index_where=text("kind = 'task_url'"))
    )
    found = await session.exec(
        select(
            col(WebhookEndpoint.org_id),
            col(WebhookEndpoint.url),
            col(WebhookEndpoint.id),
            col(WebhookEndpoint.enabled),
        ).where(
            col(WebhookEndpoint.kind) == TASK_URL,
            tuple_(col(WebhookEndpoint.org_id), col(WebhookEndpoint.url)).in_(sorted(targets)),
        )
    )
    return {(r[0], r[1]): (r[2], r[3]) for r in found}


async def legacy_secrets(session: AsyncSession) -> Sequence[WebhookEndpoint]:
    """Endpoints still holding a secret in clear (written before secrets were sealed), locked."""
    stmt = (
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.secret).is_not(None))
        .with_for_update(skip_locked=True)
    )
    return (await session.exec(stmt)).all()


async def clear_legacy_secret(session: AsyncSession, endpoint_id: str) -> None:
    await session.exec(
        update(WebhookEndpoint).where(col(WebhookEndpoint.id) == endpoint_id).values(secret=None)
    )


@dataclass(frozen=True)
class Health:
    """An endpoint after an attempt's outcome was counted."""

    id: str
    org_id: str
    kind: str
    url: str
    enabled: bool
    failing_since: datetime | None
    consecutive_failures: int


async def record_health(
    session: AsyncSession,
    endpoint_id: str,
    *,
    succeeded: bool,
    now: datetime,
    circuit_failures: int,
    cooldown_seconds: float,
) -> Health | None:
    """Count one attempt's outcome against its endpoint: a success closes the circuit and clears the failing
    streak; a failure extends it and, from `circuit_failures` in a row, opens the circuit for the cool-down
    (also after a failed half-open probe). None if the endpoint is gone."""
    e = WebhookEndpoint
    if succeeded:
        values: dict[str, object] = {
            "failing_since": None,
            "consecutive_failures": 0,
            "circuit_open_until": None,
        }
    else:
        failures = col(e.consecutive_failures) + 1
        values = {
            "failing_since": func.coalesce(col(e.failing_since), now),
            "consecutive_failures": failures,
            "circuit_open_until": case(
                (failures >= circuit_failures, now + timedelta(seconds=cooldown_seconds)),
                else_=col(e.circuit_open_until),
            ),
        }
    stmt = (
        update(e)
        .where(col(e.id) == endpoint_id)
        .values(**values)
        .returning(
            col(e.id),
            col(e.org_id),
            col(e.kind),
            col(e.url),
            col(e.enabled),
            col(e.failing_since),
            col(e.consecutive_failures),
        )
    )
    row = (await session.exec(stmt)).one_or_none()
    return None if row is None else Health(*row)


async def disable_endpoint(session: AsyncSession, endpoint_id: str, *, reason: str, now: datetime) -> bool:
    """Disable an enabled endpoint; False when it already was (or is gone), so one event is emitted."""
    e = WebhookEndpoint
    stmt = (
        update(e)
        .where(col(e.id) == endpoint_id, col(e.enabled).is_(True))
        .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
        .returning(col(e.id))
    )
    return (await session.exec(stmt)).one_or_none() is not None
