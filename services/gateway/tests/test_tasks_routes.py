"""Task lifecycle routes at the gateway against the REAL auth and scheduler services (`taskstack`: in-process
brokers on the test's NATS server, a database of this module's own): cancel, the admin list with filters and
cursor, attempts, logs (paged and followed as Server-Sent Events), schedules, the idempotency key and bad
input (artifacts: test_task_artifacts). No FakeServices here; the one stand-in is `taskstack.KnownWorkers`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any, Literal

import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.tasks import (
    TaskLogLine,
    TaskUpdateMessage,
)
from browserfleet_devkit.polling import eventually
from browserfleet_gateway.routes import logs as log_routes
from fastapi import FastAPI

from .taskstack import (
    STEPS,
    WAIT_CAP,
    Stack,
    create_task,
    error_of,
    publish_update,
    running_task,
)


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
    err = error_of(
        await stack.http.post("/api/v1/tasks", headers=stack.admin, json={"steps": STEPS, **extra}), 422
    )
    assert err["field"] == field_name, err
    # the same template inside a schedule names the path within the schedule
    sched = {"name": "bad", "cron": "* * * * *", "task": {"steps": STEPS, **extra}}
    err = error_of(await stack.http.post("/admin/schedules", headers=stack.admin, json=sched), 422)
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
    err = error_of(await stack.http.post("/admin/schedules", headers=stack.admin, json=body), 422)
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
        err = error_of(await stack.http.get("/admin/tasks", headers=stack.admin, params=params), 422)
        assert err["field"] == f"query.{name}", err
    err = error_of(await stack.http.get("/admin/tasks", headers=stack.admin, params={"cursor": "zzz"}), 422)
    assert err["field"] == "cursor"


# --- cancel -----------------------------------------------------------------------------------------
async def test_cancel_queued_and_running_at_once_and_finished_is_409(stack: Stack) -> None:
    queued = await create_task(stack)
    assert (
        await stack.http.post(f"/api/v1/tasks/{queued['id']}/cancel", headers=stack.viewer)
    ).status_code == 403
    resp = await stack.http.post(
        f"/api/v1/tasks/{queued['id']}/cancel", headers=stack.user, params={"reason": "changed my mind"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled" and "changed my mind" in resp.json()["error_message"]

    running, _ = await running_task(stack)
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
        err = error_of(await stack.http.request(method, path, headers=stack.admin), 409)
        assert err["code"] == "task_finished"
    assert (await stack.http.delete(f"/admin/tasks/{uuid.uuid4()}", headers=stack.admin)).status_code == 404


# --- admin list -------------------------------------------------------------------------------------
async def test_admin_list_filters_and_cursor(stack: Stack) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    made = [
        await create_task(stack, priority=p, worker_tags=[tag] if i % 2 else [])
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
    running, worker = await running_task(stack)
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
    task, worker = await running_task(stack)
    attempts = (await stack.http.get(f"/admin/tasks/{task['id']}/attempts", headers=stack.viewer)).json()
    assert [(a["attempt"], a["worker_id"], a["status"]) for a in attempts] == [
        (1, worker.worker_id, "running")
    ]
    lines = [TaskLogLine(message=f"line {i}", seq=i, metadata={"i": i}) for i in range(5)]
    await publish_update(
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

    got = await eventually(first_page, "log lines", WAIT_CAP)
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
    monkeypatch.setattr(log_routes, "LOG_FOLLOW_POLL_SECONDS", 0.05)
    task, worker = await running_task(stack)
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
        await publish_update(stack, msg, f"{task['id']}:{kind}:{seq}")

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
    err = error_of(
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
