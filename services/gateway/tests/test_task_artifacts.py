"""A task's artifacts at the gateway against the REAL auth and scheduler services (`taskstack`): listed and
downloaded per attempt, every attempt's of a retried task, and a task's upload from an artifact checked in
the caller's org."""

from __future__ import annotations

import uuid
from typing import Any

from browserfleet_contracts import endpoints
from browserfleet_contracts.tasks import ArtifactRef, ClaimRequest

from .taskstack import (
    STEPS,
    Stack,
    artifact_store,
    error_of,
    login,
    report_result,
    running_task,
    status_of,
)


# --- artifacts --------------------------------------------------------------------------------------
async def test_artifacts_are_listed_and_downloadable(stack: Stack) -> None:
    task, worker = await running_task(stack)
    assert (await stack.http.get(f"/api/v1/tasks/{task['id']}/artifacts", headers=stack.viewer)).json() == []
    store = await artifact_store(stack)
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
    await report_result(stack, task, worker, status="completed", artifacts=refs)
    await status_of(stack, task["id"], "completed")
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
    task, first = await running_task(stack, max_attempts=2)
    store = await artifact_store(stack)
    shots = {1: b"\x89PNG attempt one", 2: b"\x89PNG attempt two, later"}
    for attempt, data in shots.items():
        await store.put(f"{task['id']}/{attempt}/failure.png", data)

    def ref(attempt: int, name: str, size: int) -> ArtifactRef:
        return ArtifactRef(
            name=name, object_name=f"{task['id']}/{attempt}/{name}", content_type="image/png", size=size
        )

    await report_result(
        stack,
        task,
        first,
        status="failed",
        error_message="browser disconnected",
        retryable=True,
        artifacts=[ref(1, "failure.png", len(shots[1])), ref(1, "trace.zip", 5)],
    )
    assert (await status_of(stack, task["id"], "assigned"))["attempt"] == 2
    key, second = stack.workers.add()
    claim = ClaimRequest(task_id=task["id"], attempt=2, worker_key=key, delivery=1)
    assert (await stack.rpc.call(endpoints.Scheduler.CLAIM, claim)).granted
    await report_result(
        stack,
        task,
        second,
        attempt=2,
        status="failed",
        error_message="step 0: timed out",
        error_step=0,
        artifacts=[ref(2, "failure.png", len(shots[2]))],
    )
    await status_of(stack, task["id"], "failed")

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
    absent = error_of(await stack.http.get(f"{base}/trace.zip?attempt=2", headers=stack.viewer), 404)
    assert (absent["code"], absent["field"]) == ("artifact_not_found", "attempt")
    assert "attempt 2" in absent["message"] and "'trace.zip'" in absent["message"]
    for bad in ("0", "-1", "two", "1.5", ""):
        err = error_of(await stack.http.get(f"{base}/failure.png?attempt={bad}", headers=stack.viewer), 422)
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
    task, worker = await running_task(stack)
    store = await artifact_store(stack)
    await store.put(f"{task['id']}/1/report.pdf", b"%PDF-1.7 report")
    refs = [
        ArtifactRef(name=n, object_name=f"{task['id']}/1/{n}", content_type="application/pdf", size=15)
        for n in ("report.pdf", "expired.csv")
    ]
    await report_result(stack, task, worker, status="completed", artifacts=refs)
    await status_of(stack, task["id"], "completed")
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
        err = error_of(
            await stack.http.post("/api/v1/tasks", headers=stack.user, json=_upload_task(source)), 422
        )
        assert (err["field"], err["code"]) == (where, code), err
    # one file takes one source
    both = _upload_task({"task_id": task["id"], "name": "report.pdf"}, content_base64="YQ==", name="a")
    assert error_of(await stack.http.post("/api/v1/tasks", headers=stack.user, json=both), 422)["field"]
    # a schedule's template is checked the same way, its field named within the schedule
    sched = {"name": "up", "cron": "0 3 * * *", "task": _upload_task({"task_id": task["id"], "name": "nope"})}
    err = error_of(await stack.http.post("/admin/schedules", headers=stack.admin, json=sched), 422)
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
    b_admin = await login(stack.http, org_b.json()["admin_email"], org_b.json()["admin_password"])
    before = (await stack.http.get("/admin/tasks", headers=b_admin)).json()["items"]
    stolen = error_of(
        await stack.http.post(
            "/api/v1/tasks", headers=b_admin, json=_upload_task({"task_id": task["id"], "name": "report.pdf"})
        ),
        422,
    )
    nowhere = error_of(
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
