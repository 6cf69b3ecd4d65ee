"""A service that cannot reach its database answers 503 `database_unavailable` (browserfleet_core's
`rpc_error_body`), and the gateway passes it on as 503 with `Retry-After`, naming that service's database:
not a 500 "internal error". The scheduler here is FakeServices' stand-in whose create-task runs a real query
on a real `Database`: first on a closed port (the database is down), then on the test's PostgreSQL (it is
back), and the same request succeeds."""

from __future__ import annotations

from typing import Any

import httpx
from browserfleet_contracts import endpoints
from browserfleet_core.db import Database
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import rpc_error_body
from sqlalchemy import text

from .conftest import FakeServices, Signer

TASK = {"title": "t", "steps": [{"action": "navigate", "url": "https://example.com/"}]}
DOWN = "postgresql://u:p@127.0.0.1:9/none"  # port 9 (discard): nothing listens, the connection is refused


async def test_a_service_whose_database_is_down_is_a_503_with_retry_after(
    client: httpx.AsyncClient, services: FakeServices, signer: Signer, database_url: str
) -> None:
    create = services.handlers[endpoints.Scheduler.CREATE_TASK.subject]
    db = {"now": Database(DOWN, "public", pool_size=1)}

    async def create_task(payload: dict[str, Any]) -> Any:
        try:
            async with db["now"].transaction() as s:
                await (await s.connection()).execute(text("SELECT 1"))
        except Exception as exc:  # what the scheduler's rpc router answers for it
            raise ServiceError.from_body(rpc_error_body(exc)) from exc
        return await create(payload)

    services.serve(endpoints.Scheduler.CREATE_TASK.subject, create_task)
    headers = {"Authorization": f"Bearer {signer.token()}"}
    try:
        resp = await client.post("/api/v1/tasks", json=TASK, headers=headers)
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"] == "2"
        error = resp.json()["error"]
        assert error["code"] == "database_unavailable"
        assert error["message"].startswith("the scheduler service's database is unavailable")
        assert error["detail"] == [{"dependency": "scheduler database", "retry_after": 2}]

        await db["now"].dispose()
        db["now"] = Database(database_url, "public", pool_size=1)  # the database is back
        resp = await client.post("/api/v1/tasks", json=TASK, headers=headers)
        assert resp.status_code == 201, resp.text
    finally:
        await db["now"].dispose()
