"""The artifacts object store on the real NATS server: its retention period (ARTIFACT_RETENTION_DAYS), and
upload steps that read an earlier task's artifact from it (real Chromium, pages on 127.0.0.1)."""

from __future__ import annotations

import contextlib
from typing import Any

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.tasks import TaskDispatch, TaskSpec
from browserfleet_core.streams import ARTIFACTS_STREAM, ensure_streams
from browserfleet_devkit.testing import unique_name
from browserfleet_worker import artifacts
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.execution import execute
from browserfleet_worker.presence import Identity
from browserfleet_worker.runtime import WorkerRuntime
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker.steps import Artifact, StepsOutcome
from nats.js.errors import NotFoundError

from .artifact_stand import ArtifactStand

DAY = 86_400.0


async def test_artifacts_bucket_gets_the_configured_retention_and_an_old_one_is_updated(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        with contextlib.suppress(NotFoundError):
            await js.delete_object_store(subjects.ARTIFACTS_BUCKET)

        # created with the retention asked for
        await ensure_streams(js, artifact_retention_days=2)
        assert (await js.stream_info(ARTIFACTS_STREAM)).config.max_age == pytest.approx(2 * DAY)

        # an existing bucket with another retention is brought in line with the environment's setting
        monkeypatch.setenv("ARTIFACT_RETENTION_DAYS", "0.5")
        await ensure_streams(js)
        assert (await js.stream_info(ARTIFACTS_STREAM)).config.max_age == pytest.approx(0.5 * DAY)
        store = await js.object_store(subjects.ARTIFACTS_BUCKET)  # still an object store after the update
        await store.put("retention-probe", b"x")
        assert (await store.get("retention-probe")).data == b"x"

        # unset: the default, 7 days
        monkeypatch.delenv("ARTIFACT_RETENTION_DAYS")
        await ensure_streams(js)
        assert (await js.stream_info(ARTIFACTS_STREAM)).config.max_age == pytest.approx(7 * DAY)
    finally:
        await nc.close()


def test_retention_is_a_setting_of_every_service() -> None:
    from browserfleet_core.settings import ServiceSettings

    settings = ServiceSettings(nats_url="nats://x", artifact_retention_days=30)
    assert settings.artifact_retention_days == 30
    with pytest.raises(ValueError, match="artifact_retention_days"):
        ServiceSettings(nats_url="nats://x", artifact_retention_days=0)


def _dispatch(task_id: str, org_id: str, steps: list[dict[str, Any]]) -> TaskDispatch:
    return TaskDispatch(
        task_id=task_id,
        org_id=org_id,
        attempt=1,
        priority="normal",
        timeout_seconds=60,
        spec=TaskSpec.model_validate({"steps": steps}),
    )


def _upload(source: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "action": "upload",
            "selector": "#file",
            "files": [{"artifact": source, **extra}],
            "timeout_ms": 5000,
        },
        {"action": "extract", "name": "files", "selector": "#files"},
    ]


async def test_upload_from_an_artifact_of_the_same_org_only(
    nats_url: str,
    browser: BrowserHost,
    actions_site: str,
    monkeypatch: pytest.MonkeyPatch,
    artifact_stand: ArtifactStand,
) -> None:
    """The worker reads an earlier task's artifact from the object store for an upload step; one stored by a
    task of another organization is "not found", even when the reference names it exactly."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    settings = WorkerSettings(
        nats_url=nats_url, worker_key="sk_worker_up", browser_allow_networks=["127.0.0.1/32"]
    )
    rt = WorkerRuntime.create(settings, nc, browser, Identity("sk_worker_up", "w-up", "default"))
    mine, theirs = unique_name("mine"), unique_name("theirs")
    csv = b"a,b\n1,2\n"
    try:
        # earlier tasks stored their artifacts the way every task does
        for task_id, org in ((mine, "org-a"), (theirs, "org-b")):
            artifact_stand.orgs[task_id] = org
            refs = await artifacts.store_artifacts(
                rt.js,
                rt.rpc,
                "sk_worker_up",
                _dispatch(task_id, org, [{"action": "navigate", "url": actions_site}]),
                StepsOutcome(
                    status="completed", result={}, artifacts=[Artifact("report.csv", "text/csv", csv)]
                ),
            )
            assert [r.object_name for r in refs] == [f"{task_id}/1/report.csv"]
        page = {"action": "navigate", "url": f"{actions_site}/actions"}

        async def upload(source: dict[str, Any], **extra: Any) -> StepsOutcome:
            """A task of org A that uploads the artifact `source` names into the page's file input."""
            return await execute(rt, _dispatch(unique_name("up"), "org-a", [page, *_upload(source, **extra)]))

        ok = await upload({"task_id": mine, "name": "report.csv", "attempt": 1})
        assert ok.status == "completed", ok.error_message
        assert ok.result["extracted"]["files"] == f"report.csv:{len(csv)}"

        renamed = await upload({"task_id": mine, "name": "report.csv", "attempt": 1}, name="in.csv")
        assert renamed.result["extracted"]["files"] == f"in.csv:{len(csv)}"

        # a hostile spec naming another org's artifact exactly: refused as if it did not exist
        stolen = await upload({"task_id": theirs, "name": "report.csv", "attempt": 1})
        assert stolen.status == "failed"
        assert stolen.error_message == (
            f"step 1 (upload '#file'): artifact 'report.csv' of task {theirs} not found (it may have expired)"
        )

        missing = await upload({"task_id": mine, "name": "nope.csv", "attempt": 1})
        assert missing.status == "failed" and "not found" in (missing.error_message or "")

        # the size cap holds for artifacts as for inline files
        monkeypatch.setattr(artifacts, "MAX_UPLOAD_BYTES", 4)
        big = await upload({"task_id": mine, "name": "report.csv", "attempt": 1})
        assert big.status == "failed"
        assert f"is {len(csv)} bytes; an upload takes at most 4" in (big.error_message or "")
    finally:
        await nc.close()
