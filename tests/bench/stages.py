"""Where one task's submission spends its time: each stage of `POST /api/v1/tasks` timed alone, one call at a
time on the otherwise quiet platform, so every figure is latency and none is queueing.

Each call waits for the platform to settle after the one before. A submission is the gateway's HTTP work (its floor: `GET /health/live`), the audit entry opened and closed
in auth (two requests), the scheduler's create, and what the gateway does between them. The bus's own round
trips (a core request/reply, a JetStream publish with its ack) are timed beside them, to tell the services'
time from the transport's, and so are PostgreSQL's (a round trip, and a one-row INSERT's commit, which waits
for its WAL to be flushed): a task's path commits three times in a row (the audit entry, the create, the
claim), each at least that long.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import MePublic, RequestAudit
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import CreateTaskRequest, TaskCreate
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.devstack import Platform
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from .common import percentiles
from .keepalive import KeepAliveClient

PROBE_STREAM = "BENCH_PROBE"
GAP_SECONDS = 0.04


async def _timed(n: int, call: Callable[[], Awaitable[object]]) -> dict[str, float | None]:
    for _ in range(max(3, n // 10)):  # connections, prepared statements, caches
        await call()
    took: list[float] = []
    for _ in range(n):
        # a created task runs its whole life (admission, claim, result, events) right after its 201: the pause
        # lets it end, so the next call meets an idle platform and times its own stage only
        await asyncio.sleep(GAP_SECONDS)
        t0 = time.perf_counter()
        await call()
        took.append(time.perf_counter() - t0)
    return percentiles(took, (50, 90))


async def run(p: Platform, token: str, body: dict[str, Any], n: int) -> dict[str, Any]:
    http = KeepAliveClient(p.gateway_url, token=token, connections=1)
    nc = await p.connect_admin("bench-stages")
    rpc = RpcClient(nc)
    try:
        status, payload = await http.request("GET", "/auth/me")
        assert status == 200, payload
        me = MePublic.model_validate_json(payload)
        actor = Actor(org_id=me.organization.id, user_id=me.user.id, role=me.role)
        raw = json.dumps(body).encode()
        task = TaskCreate.model_validate(body)

        async def post() -> None:
            status, payload = await http.request("POST", "/api/v1/tasks", raw)
            assert status == 201, payload

        status, payload = await http.request("POST", "/api/v1/tasks", raw)
        assert status == 201, payload
        task_path = f"/api/v1/tasks/{json.loads(payload)['id']}"

        async def get() -> None:
            status, payload = await http.request("GET", task_path)
            assert status == 200, payload

        async def health() -> None:
            await http.request("GET", "/health/live")

        async def audit() -> None:
            named = actor.model_copy(update={"request_id": uuid.uuid4().hex})
            for phase, code in (("begin", None), ("end", 201)):
                entry = RequestAudit(
                    actor=named, phase=phase, action="api.bench_stage", route="POST /bench", status=code
                )
                await rpc.call(endpoints.Auth.RECORD_REQUEST, entry)

        async def create() -> None:
            await rpc.call(endpoints.Scheduler.CREATE_TASK, CreateTaskRequest(actor=actor, task=task))

        async def echo(msg: Msg) -> None:
            await msg.respond(b"")

        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=echo)

        async def request() -> None:
            await nc.request(inbox, b"x" * 300, timeout=5)

        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=PROBE_STREAM, subjects=[f"{PROBE_STREAM.lower()}.>"]))

        async def publish() -> None:
            await js.publish(
                f"{PROBE_STREAM.lower()}.x", b"x" * 300, headers={"Nats-Msg-Id": uuid.uuid4().hex}
            )

        pg = await _pg_probe(p.database_url)

        async def pg_round_trip() -> None:
            assert pg is not None
            await pg.execute("SELECT 1")

        async def pg_commit() -> None:
            assert pg is not None
            await pg.execute("INSERT INTO bench_commit_probe VALUES (1)")

        try:
            pg_stages = {}
            if pg is not None:
                pg_stages = {
                    "pg_round_trip": await _timed(n, pg_round_trip),
                    "pg_commit": await _timed(n, pg_commit),
                }
            return {
                "calls_per_stage": n,
                "http_create_task": await _timed(n, post),
                "http_get_task": await _timed(n, get),
                "http_health_live": await _timed(n, health),
                "rpc_audit_begin_and_end": await _timed(n, audit),
                "rpc_scheduler_create_task": await _timed(n, create),
                "nats_request_reply": await _timed(n, request),
                "jetstream_publish": await _timed(n, publish),
                **pg_stages,
            }
        finally:
            await js.delete_stream(PROBE_STREAM)
            if pg is not None:
                await pg.execute("DROP TABLE IF EXISTS bench_commit_probe")
                await pg.close()
    finally:
        await http.close()
        await nc.close()


ROWS = (
    ("http_create_task", "POST /api/v1/tasks"),
    ("rpc_audit_begin_and_end", "of which auth: audit begin + end"),
    ("rpc_scheduler_create_task", "of which scheduler: create"),
    ("http_health_live", "of which HTTP floor (GET /health/live)"),
    ("http_get_task", "GET /api/v1/tasks/{id}"),
    ("nats_request_reply", "bus: NATS request/reply"),
    ("jetstream_publish", "bus: JetStream publish + ack"),
    ("pg_round_trip", "PostgreSQL: a round trip (SELECT 1)"),
    ("pg_commit", "PostgreSQL: a one-row INSERT's commit"),
)


async def _pg_probe(url: str | None) -> Any:
    """An autocommit connection to the platform's database with the probe's table, or None without one."""
    if not url:
        return None
    import psycopg

    conn = await psycopg.AsyncConnection.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x integer)")
    return conn


# The path of one task, from the timestamps the scheduler wrote (its own clock, the machine's wall clock as
# the bench's): submit -> created (HTTP, gateway, auth's audit, the scheduler's create up to its statement)
# -> dispatched (equal to created when the create admitted its own task; else the admission pass) -> claimed
# (the dispatch's publish, JetStream's delivery, the worker's pull and its claim reaching the scheduler)
# -> worker start (the claim's statement, its commit and the reply); and the 201 arriving at the client.
PATH_SQL = """
SELECT id, extract(epoch FROM created_at), extract(epoch FROM dispatched_at), extract(epoch FROM started_at)
  FROM scheduler.tasks WHERE id = ANY(%s)
"""


def _task_times(url: str, ids: list[str]) -> dict[str, tuple[float, float | None, float | None]]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        rows = conn.execute(PATH_SQL, (ids,)).fetchall()
    return {
        r[0]: (float(r[1]), None if r[2] is None else float(r[2]), None if r[3] is None else float(r[3]))
        for r in rows
    }


async def path(
    url: str | None,
    ids: set[str],
    submitted: dict[str, float],
    accepted: dict[str, float],
    starts: dict[str, float],
) -> dict[str, Any] | None:
    """Per-stage percentiles of the tasks `ids` (see PATH_SQL), and the share admitted by their own create."""
    if not url or not ids:
        return None
    times = await asyncio.to_thread(_task_times, url, sorted(ids))
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "submit_to_created",
            "created_to_dispatched",
            "dispatched_to_claimed",
            "claimed_to_worker_start",
            "created_to_accepted",
        )
    }
    in_create = 0
    for task_id, (created, dispatched, claimed) in times.items():
        cols["submit_to_created"].append(created - submitted[task_id])
        cols["created_to_accepted"].append(accepted[task_id] - created)
        if dispatched is None:
            continue
        in_create += dispatched == created
        cols["created_to_dispatched"].append(dispatched - created)
        if claimed is None:
            continue
        cols["dispatched_to_claimed"].append(claimed - dispatched)
        if task_id in starts:
            cols["claimed_to_worker_start"].append(starts[task_id] - claimed)
    out: dict[str, Any] = {k: percentiles(v) for k, v in cols.items()}
    out["admitted_in_create_share"] = round(in_create / max(1, len(times)), 3)
    return out
