"""The per-endpoint circuit breaker at the claim, on the real PostgreSQL, with two claimers standing for two
webhooks replicas: while an endpoint's circuit is open its due deliveries wait (claimed by nobody, no attempt
spent); once the cool-down ended exactly one delivery goes out as the probe, even with two replicas claiming
at once, and the circuit is held shut while it is out; a failed probe opens it again; a passing probe closes
it and the deliveries that waited go out. Nothing is dropped.

Time is passed to the claims, far in the future of the clock, so the service another test may have left
running (which claims with the real clock) never sees these deliveries as due."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from browserfleet_core.db import Database, new_id
from browserfleet_webhooks.models import PENDING, WebhookDelivery, WebhookEndpoint
from browserfleet_webhooks.repository import NewDelivery, claim_due, insert_deliveries, record_health
from browserfleet_webhooks.settings import WebhooksSettings
from sqlalchemy import delete
from sqlmodel import col, select

FAILURES = 3
COOLDOWN = 60.0
LEASE = timedelta(seconds=30)


async def test_an_open_circuit_holds_deliveries_and_lets_one_probe_through(
    settings: WebhooksSettings,
) -> None:
    assert settings.database_url
    db = Database(settings.database_url, "webhooks")
    org = f"org-circuit-{new_id()[:8]}"
    t0 = datetime.now(UTC) + timedelta(days=1)
    endpoint = WebhookEndpoint(org_id=org, url="http://127.0.0.1:9/hook", events=["*"])
    try:
        async with db.transaction() as session:
            session.add(endpoint)
            await session.flush()
            ids = await insert_deliveries(
                session,
                [NewDelivery(endpoint.id, org, f"evt-{i}", "task.completed", b"{}") for i in range(3)],
                now=t0,
                first_attempt_at=t0,
            )
        assert len(ids) == 3

        async def claim(now: datetime, limit: int = 10) -> list[str]:
            async with db.transaction() as session:
                found = await claim_due(
                    session, now=now, lease_until=now + LEASE, limit=limit, circuit_failures=FAILURES
                )
            return [c.id for c in found if c.endpoint_id == endpoint.id]

        async def outcome(now: datetime, *, succeeded: bool) -> None:
            async with db.transaction() as session:
                await record_health(
                    session,
                    endpoint.id,
                    succeeded=succeeded,
                    now=now,
                    circuit_failures=FAILURES,
                    cooldown_seconds=COOLDOWN,
                )

        # three failures in a row open the circuit
        for _ in range(FAILURES):
            await outcome(t0, succeeded=False)
        assert await claim(t0 + timedelta(seconds=1)) == []  # open: the deliveries wait
        assert await attempts(db, ids) == [0, 0, 0]

        # after the cool-down two replicas claim at once, one delivery each at most: one probe in all
        t1 = t0 + timedelta(seconds=COOLDOWN + 1)
        first, second = await asyncio.gather(claim(t1, limit=1), claim(t1, limit=1))
        assert len(first) + len(second) == 1
        (probe,) = first + second
        assert await claim(t1) == []  # held shut while the probe is out
        # the probe fails: open again for a cool-down
        await outcome(t1, succeeded=False)
        t2 = t1 + timedelta(seconds=COOLDOWN / 2)
        assert await claim(t2) == []
        # after it, the next probe (not the leased one) passes and closes the circuit
        t3 = t1 + timedelta(seconds=COOLDOWN + 1)
        (second_probe,) = await claim(t3)
        assert second_probe != probe
        await outcome(t3, succeeded=True)
        # closed: the one that waited goes out, and so does the first probe, whose lease ended unanswered
        rest = await claim(t3)
        assert sorted(rest) == sorted(set(ids) - {second_probe}) and probe in rest
        assert await attempts(db, ids) == [1, 1, 2]
    finally:
        async with db.transaction() as session:
            await session.exec(delete(WebhookEndpoint).where(col(WebhookEndpoint.id) == endpoint.id))
        await db.dispose()


async def attempts(db: Database, ids: list[str]) -> list[int]:
    async with db.transaction() as session:
        rows = (await session.exec(select(WebhookDelivery).where(col(WebhookDelivery.id).in_(ids)))).all()
    assert {r.status for r in rows} == {PENDING}
    return sorted(r.attempt for r in rows)
