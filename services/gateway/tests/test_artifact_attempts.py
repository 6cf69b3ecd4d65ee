"""Which artifact of a retried task the gateway lists and serves (artifacts): every attempt's is listed,
by attempt; a download serves the latest attempt's unless asked for one. Plain functions over a task's
record; the routes over a real scheduler are in test_tasks_routes.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from browserfleet_contracts.tasks import ArtifactRef, TaskPublic, TaskSpec
from browserfleet_core.errors import NotFound
from browserfleet_gateway.artifacts import find_artifact, public_artifacts

TASK_ID = "5d0c1c7e-1111-4000-8000-00000000abcd"


def _ref(attempt: int | str, name: str, size: int = 1) -> ArtifactRef:
    return ArtifactRef(
        name=name, object_name=f"{TASK_ID}/{attempt}/{name}", content_type="image/png", size=size
    )


def _task(*refs: ArtifactRef) -> TaskPublic:
    now = datetime.now(UTC)
    return TaskPublic(
        id=TASK_ID,
        org_id="org-a",
        title=None,
        kind="steps",
        status="failed",
        priority="normal",
        worker_tags=[],
        spec=TaskSpec.model_validate(
            {"kind": "steps", "steps": [{"action": "navigate", "url": "https://x.test/"}]}
        ),
        timeout_seconds=60,
        max_attempts=3,
        attempt=3,
        artifacts=list(refs),
        webhook_url=None,
        metadata={},
        created_by="u1",
        created_at=now,
        updated_at=now,
    )


# out of attempt order on purpose: a list sorted by the scheduler is the easy case
RETRIED = _task(
    _ref(2, "failure.png", size=20),
    _ref(1, "failure.png", size=10),
    _ref(1, "trace.zip", size=11),
    _ref(3, "page.pdf", size=30),
    _ref(2, "trace.zip", size=21),
)


def test_every_attempts_artifacts_are_listed_by_attempt_each_with_its_own_url() -> None:
    listed = [(a.attempt, a.name, a.size, a.url) for a in public_artifacts(RETRIED)]
    base = f"/api/v1/tasks/{TASK_ID}/artifacts"
    assert listed == [
        (1, "failure.png", 10, f"{base}/failure.png?attempt=1"),
        (1, "trace.zip", 11, f"{base}/trace.zip?attempt=1"),
        (2, "failure.png", 20, f"{base}/failure.png?attempt=2"),
        (2, "trace.zip", 21, f"{base}/trace.zip?attempt=2"),
        (3, "page.pdf", 30, f"{base}/page.pdf?attempt=3"),
    ]


def test_a_ref_without_an_attempt_in_its_object_name_is_listed_without_one() -> None:
    odd = ArtifactRef(name="a b.png", object_name="legacy-a b.png", content_type="", size=2)
    [only] = public_artifacts(_task(odd))
    assert (only.attempt, only.content_type, only.url) == (
        None,
        "application/octet-stream",
        f"/api/v1/tasks/{TASK_ID}/artifacts/a%20b.png",
    )


def test_a_download_serves_the_latest_attempts_unless_asked_for_one() -> None:
    assert find_artifact(RETRIED, "failure.png").size == 20
    assert find_artifact(RETRIED, "failure.png", 1).size == 10
    assert find_artifact(RETRIED, "trace.zip", 2).size == 21
    assert find_artifact(RETRIED, "page.pdf").size == 30
    # an attempt that names one artifact twice: the last stored
    twice = _task(_ref(1, "shot.png", size=1), _ref(1, "shot.png", size=2))
    assert find_artifact(twice, "shot.png").size == find_artifact(twice, "shot.png", 1).size == 2


def test_a_missing_artifact_is_404_naming_what_is_missing() -> None:
    with pytest.raises(NotFound) as no_name:
        find_artifact(RETRIED, "nope.png")
    assert (no_name.value.field, no_name.value.code) == ("name", "artifact_not_found")
    assert "'nope.png'" in no_name.value.message

    with pytest.raises(NotFound) as no_attempt:
        find_artifact(RETRIED, "page.pdf", 2)
    assert (no_attempt.value.field, no_attempt.value.code) == ("attempt", "artifact_not_found")
    assert no_attempt.value.message == (
        "attempt 2 of the task stored no artifact named 'page.pdf' (attempts that did: 3)"
    )
