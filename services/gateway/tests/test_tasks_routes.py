"""Task lifecycle routes at the gateway against the REAL auth and scheduler services (in-process brokers on
the test's NATS server, a database of this module's own): cancel, the admin list with filters and cursor,
attempts, logs (paged and followed as Server-Sent Events), schedules, artifacts, the idempotency key and
bad input. No FakeServices here.

The one stand-in: worker keys are checked by `KnownWorkers` instead of the worker-gateway service (the
scheduler's own tests inject the same), so a test can claim an attempt as a worker would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from browserfleet_auth.app import AuthApp
from browserfleet_auth.app import build as build_auth
from browserfleet_auth.settings import AuthSettings
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import BootstrapReply, BootstrapRequest
from browserfleet_contracts.tasks import (
    ArtifactRef,
    ClaimReply,
    ClaimRequest,
    TaskLogLine,
    TaskUpdateMessage,
)
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core import migrations
from browserfleet_core.messaging import RpcClient, connect, ensure_streams
from browserfleet_gateway import routes_tasks
from browserfleet_gateway.app import create_app
from browserfleet_gateway.settings import GatewaySettings
from browserfleet_scheduler.app import PACKAGE as SCHEDULER
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.settings import SchedulerSettings
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient

WAIT_CAP = 30.0  # hang protection only; nothing asserts on speed
STEPS = [{"action": "navigate", "url": "https://example.test/"}]


class KnownWorkers:
    """Stands in for worker-gateway's key check (see the module docstring)."""

    def __init__(self) -> None:
        self.keys: dict[str, WorkerIdentity] = {}

    def add(self) -> tuple[str, WorkerIdentity]:
        key = f"sk_worker_{uuid.uuid4().hex}"
        self.keys[key] = WorkerIdentity(worker_id=str(uuid.uuid4()), org_id=None, name="w", tags=[])
        return key, self.keys[key]

    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        return self.keys.get(worker_key)


@dataclass
class Stack:
    app: FastAPI
    http: httpx.AsyncClient
    nc: NatsClient
    rpc: RpcClient
    workers: KnownWorkers
    admin: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)
    viewer: dict[str, str] = field(default_factory=dict)
    key: dict[str, str] = field(default_factory=dict)


def _own_database(database_url: str) -> str:
    """A database of this module's own on the test server: auth's bootstrap must be the first here."""
    name = f"gw_tasks_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(database_url)
    plain = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _login(http: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    resp = await http.post("/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


@pytest.fixture(scope="module")
async def stack(nats_url: str, database_url: str) -> AsyncIterator[Stack]:
    db = await asyncio.to_thread(_own_database, database_url)
    await asyncio.to_thread(migrations.upgrade, "browserfleet_auth", db)
    await asyncio.to_thread(migrations.upgrade, SCHEDULER, db)
    auth: AuthApp = build_auth(AuthSettings(nats_url=nats_url, database_url=db))
    await auth.start()
    workers = KnownWorkers()
    scheduler = SchedulerApp(
        SchedulerSettings(
            nats_url=nats_url,
            database_url=db,
            migrate_on_start=False,
            outbox_poll_seconds=0.2,
            update_redelivery_seconds=0.0,
            admission_poll_seconds=0.2,
            retry_backoff_seconds=0.0,  # a retried task's next attempt is dispatched at once
            # nothing here finishes the tasks it admits: the org's limit must not hold later tests back
            plan_concurrency={"free": 1000, "pro": 1000, "enterprise": 1000},
            default_org_concurrency=1000,
        ),
        authenticator=workers,
    )
    await scheduler.start()
    nc = await connect(nats_url, name="gw-tasks-test")
    settings = GatewaySettings(
        nats_url=nats_url, database_url=None, jwks_min_refresh_seconds=0, rpc_timeout_seconds=10
    )
    app = create_app(settings, nc=nc)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http,
        ):
            app.state.gateway.limiter = None  # rate limits have their own tests; none in the way here
            rpc = RpcClient(nc, timeout=10)
            boot: BootstrapReply = await rpc.call(subjects.Auth.BOOTSTRAP, BootstrapRequest(), BootstrapReply)
            assert boot.password, "this module's database is fresh"
            s = Stack(app=app, http=http, nc=nc, rpc=rpc, workers=workers)
            s.admin = await _login(http, boot.admin_email, boot.password)
            for role in ("user", "viewer"):
                made = await http.post(
                    "/admin/users", headers=s.admin, json={"email": f"{role}@tasks.example", "role": role}
                )
                assert made.status_code == 201, made.text
                setattr(s, role, await _login(http, made.json()["email"], made.json()["password"]))
            key = await http.post(
                "/admin/api-keys",
                headers=s.admin,
                json={"name": "ci", "scopes": ["tasks:read", "tasks:write"]},
            )
            s.key = {"Authorization": f"Bearer {key.json()['key']}"}
            yield s
    finally:
        await scheduler.stop()
        await auth.stop()
        await nc.close()


async def _eventually(probe: Any, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_CAP
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def _create(s: Stack, headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    resp = await s.http.post("/api/v1/tasks", headers=headers or s.admin, json={"steps": STEPS, **extra})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _status(s: Stack, task_id: str, *wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task: dict[str, Any] = (await s.http.get(f"/admin/tasks/{task_id}", headers=s.admin)).json()
        return task if task["status"] in wanted else None

    result: dict[str, Any] = await _eventually(probe, f"task {task_id} {'/'.join(wanted)}")
    return result


async def _running(s: Stack, **extra: Any) -> tuple[dict[str, Any], WorkerIdentity]:
    """A task claimed by a (stand-in) worker, as a pulled dispatch would be."""
    task = await _create(s, **extra)
    await _status(s, task["id"], "assigned")
    key, identity = s.workers.add()
    claim = ClaimRequest(task_id=task["id"], attempt=1, worker_key=key, delivery=1)
    assert (await s.rpc.call(subjects.Scheduler.CLAIM, claim, ClaimReply)).granted
    return task, identity


async def _update(s: Stack, msg: TaskUpdateMessage, msg_id: str) -> None:
    js = s.nc.jetstream()
    await js.publish(
        subjects.task_update(msg.task_id), msg.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id}
    )


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    return err


# --- idempotency ----------------------------------------------------------------------------------
async def test_a_repeated_idempotency_key_returns_the_first_task(stack: Stack) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    first = await stack.http.post("/api/v1/tasks", headers={**stack.key, **key}, json={"steps": STEPS})
    again = await stack.http.post("/api/v1/tasks", headers={**stack.key, **key}, json={"steps": STEPS})
    other = await stack.http.post(
        "/api/v1/tasks", headers={**stack.key, "Idempotency-Key": "another"}, json={"steps": STEPS}
    )
    assert first.status_code == again.status_code == other.status_code == 201, first.text
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert again.headers["Location"] == f"/api/v1/tasks/{first.json()['id']}"


# --- bad input --------------------------------------------------------------------------------------
TASK_BAD = [
    ({"priority": "extreme"}, "priority"),
    ({"timeout_seconds": -1}, "timeout_seconds"),
    ({"timeout_seconds": 10**9}, "timeout_seconds"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 11}, "max_attempts"),
    ({"worker_tags": ["Not A Tag!"]}, "worker_tags.0"),
]


@pytest.mark.parametrize(("extra", "field_name"), TASK_BAD)
async def test_bad_task_is_422_naming_the_field_and_nothing_is_stored(
    stack: Stack, extra: dict[str, Any], field_name: str
) -> None:
    before = (await stack.http.get("/admin/tasks", headers=stack.admin, params={"limit": 500})).json()
    err = _error(
        await stack.http.post("/api/v1/tasks", headers=stack.admin, json={"steps": STEPS, **extra}), 422
    )
    assert err["field"] == field_name, err
    # the same template inside a schedule names the path within the schedule
    sched = {"name": "bad", "cron": "* * * * *", "task": {"steps": STEPS, **extra}}
    err = _error(await stack.http.post("/admin/schedules", headers=stack.admin, json=sched), 422)
    assert err["field"] == f"task.{field_name}", err
    after = (await stack.http.get("/admin/tasks", headers=stack.admin, params={"limit": 500})).json()
    assert [t["id"] for t in after["items"]] == [t["id"] for t in before["items"]]


SCHEDULE_BAD = [
    ({"cron": "not a cron"}, "cron"),
    ({"cron": "61 * * * *"}, "cron"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"),
]


@pytest.mark.parametrize(("extra", "field_name"), SCHEDULE_BAD)
async def test_bad_schedule_is_422_naming_the_field_and_nothing_is_stored(
    stack: Stack, extra: dict[str, Any], field_name: str
) -> None:
    before = (await stack.http.get("/admin/schedules", headers=stack.admin)).json()
    body = {"name": "nightly", "cron": "0 3 * * *", "task": {"steps": STEPS}, **extra}
    err = _error(await stack.http.post("/admin/schedules", headers=stack.admin, json=body), 422)
    assert err["field"] == field_name, err
    assert (await stack.http.get("/admin/schedules", headers=stack.admin)).json() == before


async def test_bad_list_filters_are_422(stack: Stack) -> None:
    for params, name in (
        ({"priority": "extreme"}, "priority"),
        ({"status": "sleeping"}, "status"),
        ({"tag": "Bad Tag"}, "tag"),
        ({"limit": 0}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
    ):
        err = _error(await stack.http.get("/admin/tasks", headers=stack.admin, params=params), 422)
        assert err["field"] == f"query.{name}", err
    err = _error(await stack.http.get("/admin/tasks", headers=stack.admin, params={"cursor": "zzz"}), 422)
    assert err["field"] == "cursor"


# --- cancel -----------------------------------------------------------------------------------------
async def test_cancel_queued_and_running_at_once_and_finished_is_409(stack: Stack) -> None:
    queued = await _create(stack)
    assert (
        await stack.http.post(f"/api/v1/tasks/{queued['id']}/cancel", headers=stack.viewer)
    ).status_code == 403
    resp = await stack.http.post(
        f"/api/v1/tasks/{queued['id']}/cancel", headers=stack.user, params={"reason": "changed my mind"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled" and "changed my mind" in resp.json()["error_message"]

    running, _ = await _running(stack)
    signal = await stack.nc.subscribe(subjects.task_cancel(running["id"]))
    resp = await stack.http.delete(f"/admin/tasks/{running['id']}", headers=stack.key)
    # cancelled in the answer itself: the worker is told, and its late result is ignored
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    await signal.next_msg(timeout=WAIT_CAP)
    await signal.unsubscribe()
    for path, method in (
        (f"/admin/tasks/{running['id']}", "DELETE"),
        (f"/api/v1/tasks/{queued['id']}/cancel", "POST"),
    ):
        err = _error(await stack.http.request(method, path, headers=stack.admin), 409)
        assert err["code"] == "task_finished"
    assert (await stack.http.delete(f"/admin/tasks/{uuid.uuid4()}", headers=stack.admin)).status_code == 404


# --- admin list -------------------------------------------------------------------------------------
async def test_admin_list_filters_and_cursor(stack: Stack) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    made = [
        await _create(stack, priority=p, worker_tags=[tag] if i % 2 else [])
        for i, p in enumerate(["low", "high", "high", "urgent", "high"])
    ]
    mine = {t["id"] for t in made}

    async def ids(**params: Any) -> list[str]:
        resp = await stack.http.get("/admin/tasks", headers=stack.viewer, params={"limit": 500, **params})
        assert resp.status_code == 200, resp.text
        return [t["id"] for t in resp.json()["items"]]

    assert [i for i in await ids(priority="high") if i in mine] == [
        made[4]["id"],
        made[2]["id"],
        made[1]["id"],
    ]
    assert set(await ids(tag=tag)) == {made[1]["id"], made[3]["id"]}
    # the range is [created_after, created_before)
    since = made[0]["created_at"]
    assert set(await ids(created_after=since)) >= mine
    assert set(await ids(created_after=made[1]["created_at"])) & mine == mine - {made[0]["id"]}
    assert set(await ids(created_after=since, created_before=made[1]["created_at"])) == {made[0]["id"]}
    running, worker = await _running(stack)
    assert await ids(worker=worker.worker_id) == [running["id"]]
    assert running["id"] in await ids(status="running")
    # cursor pagination walks everything once, newest first
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "created_after": since}
        if cursor:
            params["cursor"] = cursor
        page = (await stack.http.get("/admin/tasks", headers=stack.admin, params=params)).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == set(await ids(created_after=since))


# --- attempts and logs ------------------------------------------------------------------------------
async def test_attempts_and_paged_logs(stack: Stack) -> None:
    task, worker = await _running(stack)
    attempts = (await stack.http.get(f"/admin/tasks/{task['id']}/attempts", headers=stack.viewer)).json()
    assert [(a["attempt"], a["worker_id"], a["status"]) for a in attempts] == [
        (1, worker.worker_id, "running")
    ]
    lines = [TaskLogLine(message=f"line {i}", seq=i, metadata={"i": i}) for i in range(5)]
    await _update(
        stack,
        TaskUpdateMessage(task_id=task["id"], attempt=1, worker_id=worker.worker_id, kind="log", logs=lines),
        f"{task['id']}:log",
    )

    async def page(since: int) -> dict[str, Any]:
        resp = await stack.http.get(
            f"/admin/tasks/{task['id']}/logs", headers=stack.key, params={"since": since, "limit": 2}
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def first_page() -> dict[str, Any] | None:
        got = await page(0)
        return got if got["items"] else None

    got = await _eventually(first_page, "log lines")
    messages = [x["message"] for x in got["items"]]
    while got["items"]:
        assert not got["finished"]
        got = await page(got["next_since"])
        messages += [x["message"] for x in got["items"]]
    assert messages == [f"line {i}" for i in range(5)]


class AsgiStream:
    """Drives the ASGI app directly so each body chunk is seen as it is sent (httpx's ASGI transport hands
    the body over only at the end)."""

    def __init__(self, app: FastAPI, path: str, query: str, headers: dict[str, str]) -> None:
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.status: int | None = None
        self._disconnect = asyncio.Event()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("gw.test", 80),
            "state": {},
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not hasattr(self, "_sent_request"):
            self._sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._disconnect.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await self.chunks.put(message["body"])
            if not message.get("more_body"):
                await self.chunks.put(None)

    async def events(self) -> AsyncIterator[tuple[str, str, str | None]]:
        buffer = b""
        while True:
            chunk = await asyncio.wait_for(self.chunks.get(), WAIT_CAP)
            if chunk is None:
                return
            buffer += chunk
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                fields: dict[str, str] = {}
                for line in raw.decode().splitlines():
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(": ")
                    fields[name] = value
                if "event" in fields:
                    yield fields["event"], fields.get("data", ""), fields.get("id")


async def test_follow_streams_lines_as_sse_until_the_task_is_terminal(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_tasks, "LOG_FOLLOW_POLL_SECONDS", 0.05)
    task, worker = await _running(stack)
    path = f"/admin/tasks/{task['id']}/logs"
    stream = AsgiStream(stack.app, path, "follow=true", stack.admin)
    events = stream.events()

    async def send(seq: int, kind: Literal["log", "result"] = "log", **extra: Any) -> None:
        msg = TaskUpdateMessage(
            task_id=task["id"],
            attempt=1,
            worker_id=worker.worker_id,
            kind=kind,
            logs=[TaskLogLine(message=f"line {seq}", seq=seq)],
            **extra,
        )
        await _update(stack, msg, f"{task['id']}:{kind}:{seq}")

    await send(0)
    event, data, first_id = await anext(events)
    # the line arrived while the task still runs: it is streamed, not collected at the end
    assert (event, json.loads(data)["message"]) == ("log", "line 0") and first_id is not None
    assert stream.status == 200
    assert (await stack.http.get(f"/admin/tasks/{task['id']}", headers=stack.admin)).json()[
        "status"
    ] == "running"
    await send(1)
    event, data, _ = await anext(events)
    assert json.loads(data)["message"] == "line 1"
    await send(2, kind="result", status="completed", result={"ok": True})
    rest = [e async for e in events]
    assert [(e, json.loads(d).get("message")) for e, d, _ in rest] == [("log", "line 2"), ("end", None)]
    await asyncio.wait_for(stream.task, WAIT_CAP)

    # a reconnect with Last-Event-ID continues after that line and ends at once (the task is terminal)
    again = await stack.http.get(
        path, headers={**stack.admin, "Last-Event-ID": first_id}, params={"follow": "true"}
    )
    assert again.headers["content-type"].startswith("text/event-stream")
    messages = [json.loads(x[6:]).get("message") for x in again.text.splitlines() if x.startswith("data: ")]
    assert messages == ["line 1", "line 2", None]
    # another org's task is a plain 404, not an empty stream
    assert (
        await stack.http.get(
            f"/admin/tasks/{uuid.uuid4()}/logs", headers=stack.admin, params={"follow": "true"}
        )
    ).status_code == 404


# --- schedules --------------------------------------------------------------------------------------
async def test_schedules_crud_pause_and_resume(stack: Stack) -> None:
    body = {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "task": {"steps": STEPS}}
    assert (await stack.http.post("/admin/schedules", headers=stack.user, json=body)).status_code == 403
    made = await stack.http.post("/admin/schedules", headers=stack.admin, json=body)
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    assert made.headers["Location"] == f"/admin/schedules/{sid}" and made.json()["next_run_at"]
    assert sid in [x["id"] for x in (await stack.http.get("/admin/schedules", headers=stack.viewer)).json()]
    assert (await stack.http.get(f"/admin/schedules/{sid}", headers=stack.viewer)).json()[
        "cron"
    ] == "0 3 * * *"
    changed = await stack.http.put(
        f"/admin/schedules/{sid}", headers=stack.admin, json={"cron": "*/5 * * * *", "name": "often"}
    )
    assert changed.status_code == 200 and changed.json()["name"] == "often", changed.text
    err = _error(
        await stack.http.put(f"/admin/schedules/{sid}", headers=stack.admin, json={"cron": "nope"}), 422
    )
    assert err["field"] == "cron"
    assert (await stack.http.get(f"/admin/schedules/{sid}", headers=stack.admin)).json()[
        "cron"
    ] == "*/5 * * * *"
    paused = (await stack.http.post(f"/admin/schedules/{sid}/pause", headers=stack.key)).json()
    assert paused["paused"] is True and paused["next_run_at"] is None
    resumed = (await stack.http.post(f"/admin/schedules/{sid}/resume", headers=stack.admin)).json()
    assert resumed["paused"] is False and resumed["next_run_at"]
    assert (await stack.http.delete(f"/admin/schedules/{sid}", headers=stack.viewer)).status_code == 403
    assert (await stack.http.delete(f"/admin/schedules/{sid}", headers=stack.admin)).status_code == 204
    assert (await stack.http.get(f"/admin/schedules/{sid}", headers=stack.admin)).status_code == 404
    assert (await stack.http.delete(f"/admin/schedules/{sid}", headers=stack.admin)).status_code == 404


# --- artifacts --------------------------------------------------------------------------------------
async def test_artifacts_are_listed_and_downloadable(stack: Stack) -> None:
    task, worker = await _running(stack)
    assert (await stack.http.get(f"/api/v1/tasks/{task['id']}/artifacts", headers=stack.viewer)).json() == []
    js = stack.nc.jetstream()
    await ensure_streams(js)
    store = await js.object_store(subjects.ARTIFACTS_BUCKET)
    payload = b"%PDF-1.7 " + bytes(range(256)) * 10
    await store.put(f"{task['id']}/1/page.pdf", payload)
    refs = [
        ArtifactRef(
            name="page.pdf",
            object_name=f"{task['id']}/1/page.pdf",
            content_type="application/pdf",
            size=len(payload),
        ),
        ArtifactRef(
            name="shot one.png", object_name=f"{task['id']}/1/shot one.png", content_type="image/png", size=3
        ),
    ]
    done = TaskUpdateMessage(
        task_id=task["id"],
        attempt=1,
        worker_id=worker.worker_id,
        kind="result",
        status="completed",
        artifacts=refs,
    )
    await _update(stack, done, f"{task['id']}:1:result")
    await _status(stack, task["id"], "completed")
    listed = await stack.http.get(f"/api/v1/tasks/{task['id']}/artifacts", headers=stack.key)
    assert listed.status_code == 200, listed.text
    assert listed.json() == [
        {
            "name": "page.pdf",
            "content_type": "application/pdf",
            "size": len(payload),
            "attempt": 1,
            "url": f"/api/v1/tasks/{task['id']}/artifacts/page.pdf?attempt=1",
        },
        {
            "name": "shot one.png",
            "content_type": "image/png",
            "size": 3,
            "attempt": 1,
            "url": f"/api/v1/tasks/{task['id']}/artifacts/shot%20one.png?attempt=1",
        },
    ]
    got = await stack.http.get(listed.json()[0]["url"], headers=stack.viewer)
    assert got.status_code == 200 and got.content == payload
    assert (
        await stack.http.get(f"/api/v1/tasks/{uuid.uuid4()}/artifacts", headers=stack.admin)
    ).status_code == 404


async def test_a_retried_tasks_artifacts_of_every_attempt_are_listed(stack: Stack) -> None:
    """The worker's browser crashed under attempt 1: its failure screenshot and trace stay listed next to
    attempt 2's, and the download by name serves the latest attempt's."""
    task, first = await _running(stack, max_attempts=2)
    js = stack.nc.jetstream()
    await ensure_streams(js)
    store = await js.object_store(subjects.ARTIFACTS_BUCKET)
    shots = {1: b"\x89PNG attempt one", 2: b"\x89PNG attempt two, later"}
    for attempt, data in shots.items():
        await store.put(f"{task['id']}/{attempt}/failure.png", data)

    def ref(attempt: int, name: str, size: int) -> ArtifactRef:
        return ArtifactRef(
            name=name, object_name=f"{task['id']}/{attempt}/{name}", content_type="image/png", size=size
        )

    crash = TaskUpdateMessage(
        task_id=task["id"],
        attempt=1,
        worker_id=first.worker_id,
        kind="result",
        status="failed",
        error_message="browser disconnected",
        retryable=True,
        artifacts=[ref(1, "failure.png", len(shots[1])), ref(1, "trace.zip", 5)],
    )
    await _update(stack, crash, f"{task['id']}:1:result")
    assert (await _status(stack, task["id"], "assigned"))["attempt"] == 2
    key, second = stack.workers.add()
    claim = ClaimRequest(task_id=task["id"], attempt=2, worker_key=key, delivery=1)
    assert (await stack.rpc.call(subjects.Scheduler.CLAIM, claim, ClaimReply)).granted
    verdict = TaskUpdateMessage(
        task_id=task["id"],
        attempt=2,
        worker_id=second.worker_id,
        kind="result",
        status="failed",
        error_message="step 0: timed out",
        error_step=0,
        artifacts=[ref(2, "failure.png", len(shots[2]))],
    )
    await _update(stack, verdict, f"{task['id']}:2:result")
    await _status(stack, task["id"], "failed")

    listed = await stack.http.get(f"/api/v1/tasks/{task['id']}/artifacts", headers=stack.viewer)
    assert listed.status_code == 200, listed.text
    base = f"/api/v1/tasks/{task['id']}/artifacts"
    assert [(a["attempt"], a["name"], a["size"], a["url"]) for a in listed.json()] == [
        (1, "failure.png", len(shots[1]), f"{base}/failure.png?attempt=1"),
        (1, "trace.zip", 5, f"{base}/trace.zip?attempt=1"),
        (2, "failure.png", len(shots[2]), f"{base}/failure.png?attempt=2"),
    ]
    latest = await stack.http.get(f"{base}/failure.png", headers=stack.viewer)
    assert latest.status_code == 200 and latest.content == shots[2]
    for attempt, data in shots.items():
        # the listed url, and the same attempt asked for by hand
        for url in (listed.json()[2 * (attempt - 1)]["url"], f"{base}/failure.png?attempt={attempt}"):
            got = await stack.http.get(url, headers=stack.key)
            assert got.status_code == 200 and got.content == data, url
    absent = _error(await stack.http.get(f"{base}/trace.zip?attempt=2", headers=stack.viewer), 404)
    assert (absent["code"], absent["field"]) == ("artifact_not_found", "attempt")
    assert "attempt 2" in absent["message"] and "'trace.zip'" in absent["message"]
    for bad in ("0", "-1", "two", "1.5", ""):
        err = _error(await stack.http.get(f"{base}/failure.png?attempt={bad}", headers=stack.viewer), 422)
        assert err["field"] == "query.attempt", (bad, err)


# --- upload from an artifact ------------------------------------------------------------------------
def _upload_task(source: dict[str, Any], **file: Any) -> dict[str, Any]:
    return {
        "steps": [
            *STEPS,
            {"action": "upload", "selector": "#file", "files": [{"artifact": source, **file}]},
        ]
    }


async def test_upload_from_an_artifact_is_checked_in_the_callers_org(stack: Stack) -> None:
    # org A's earlier task stored report.pdf (in the object store and on its record); expired.csv is on the
    # record only, as after the retention period
    task, worker = await _running(stack)
    js = stack.nc.jetstream()
    await ensure_streams(js)
    store = await js.object_store(subjects.ARTIFACTS_BUCKET)
    await store.put(f"{task['id']}/1/report.pdf", b"%PDF-1.7 report")
    refs = [
        ArtifactRef(name=n, object_name=f"{task['id']}/1/{n}", content_type="application/pdf", size=15)
        for n in ("report.pdf", "expired.csv")
    ]
    done = TaskUpdateMessage(
        task_id=task["id"],
        attempt=1,
        worker_id=worker.worker_id,
        kind="result",
        status="completed",
        artifacts=refs,
    )
    await _update(stack, done, f"{task['id']}:1:result")
    await _status(stack, task["id"], "completed")
    field = "steps.1.files.0.artifact"

    ok = await stack.http.post(
        "/api/v1/tasks", headers=stack.user, json=_upload_task({"task_id": task["id"], "name": "report.pdf"})
    )
    assert ok.status_code == 201, ok.text
    # the attempt the gateway found travels with the task, so the worker reads exactly that object
    assert ok.json()["spec"]["steps"][1]["files"][0]["artifact"] == {
        "task_id": task["id"],
        "name": "report.pdf",
        "attempt": 1,
    }

    bad = [
        ({"task_id": task["id"], "name": "nope.pdf"}, f"{field}.name", "artifact_not_found"),
        (
            {"task_id": task["id"], "name": "report.pdf", "attempt": 2},
            f"{field}.attempt",
            "artifact_not_found",
        ),
        ({"task_id": task["id"], "name": "expired.csv"}, f"{field}.name", "artifact_expired"),
        ({"task_id": str(uuid.uuid4()), "name": "report.pdf"}, f"{field}.task_id", "artifact_not_found"),
    ]
    for source, where, code in bad:
        err = _error(
            await stack.http.post("/api/v1/tasks", headers=stack.user, json=_upload_task(source)), 422
        )
        assert (err["field"], err["code"]) == (where, code), err
    # one file takes one source
    both = _upload_task({"task_id": task["id"], "name": "report.pdf"}, content_base64="YQ==", name="a")
    assert _error(await stack.http.post("/api/v1/tasks", headers=stack.user, json=both), 422)["field"]
    # a schedule's template is checked the same way, its field named within the schedule
    sched = {"name": "up", "cron": "0 3 * * *", "task": _upload_task({"task_id": task["id"], "name": "nope"})}
    err = _error(await stack.http.post("/admin/schedules", headers=stack.admin, json=sched), 422)
    assert err["field"] == f"task.{field}.name", err

    # a hostile client of another organization naming org A's task exactly: as if the task did not exist
    org_b = await stack.http.post(
        "/organizations",
        headers=stack.admin,
        json={
            "name": "Upload Thief",
            "slug": f"thief-{uuid.uuid4().hex[:6]}",
            "admin_email": "a@thief.example",
        },
    )
    assert org_b.status_code == 201, org_b.text
    b_admin = await _login(stack.http, org_b.json()["admin_email"], org_b.json()["admin_password"])
    before = (await stack.http.get("/admin/tasks", headers=b_admin)).json()["items"]
    stolen = _error(
        await stack.http.post(
            "/api/v1/tasks", headers=b_admin, json=_upload_task({"task_id": task["id"], "name": "report.pdf"})
        ),
        422,
    )
    nowhere = _error(
        await stack.http.post(
            "/api/v1/tasks",
            headers=b_admin,
            json=_upload_task({"task_id": str(uuid.uuid4()), "name": "report.pdf"}),
        ),
        422,
    )
    assert (
        (stolen["field"], stolen["code"])
        == (nowhere["field"], nowhere["code"])
        == (
            f"{field}.task_id",
            "artifact_not_found",
        )
    )
    assert stolen["message"] == f"{field}.task_id: task {task['id']} not found"
    assert (await stack.http.get("/admin/tasks", headers=b_admin)).json()["items"] == before == []
