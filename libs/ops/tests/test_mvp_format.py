"""What import-mvp reads: the sample in docs/ loads whole; each bad record is refused alone, with the reason,
and never with a credential's value in it."""

from __future__ import annotations

import json
from pathlib import Path

from browserfleet_ops.mvp.format import load

SAMPLE = Path(__file__).resolve().parents[3] / "docs" / "mvp-sample"


def test_the_sample_loads_whole() -> None:
    data = load(SAMPLE)
    assert data.problems == []
    assert data.organization is not None and data.organization.slug == "acme-mvp"
    assert [w.id for w in data.workers] == ["worker-1", "worker-2"]
    assert data.workers[1].last_seen is not None and data.workers[1].last_seen.year == 2024
    assert [(t.id, t.fate) for t in data.tasks] == [
        ("task-1001", "history"),
        ("task-1002", "history"),
        ("task-1003", "interrupted"),
        ("task-1004", "requeue"),
    ]
    assert data.tasks[1].description == "Check the competitor pricing page"
    assert data.tasks[0].worker == "worker-1"
    assert [c.name for c in data.credentials] == ["SALESFORCE_PASSWORD", "WIKI_API_TOKEN"]


def test_bad_records_are_refused_one_by_one(tmp_path: Path) -> None:
    (tmp_path / "tasks.json").write_text(
        json.dumps(
            {
                "tasks": [
                    {"id": 7, "task": "ok", "status": "done", "completed_at": 1714546800},
                    {"id": "x", "status": "completed"},
                    {"id": "y", "task": "t", "status": "exploded"},
                    {"id": 7, "task": "again", "status": "done"},
                ]
            }
        )
    )
    (tmp_path / "credentials.json").write_text(
        json.dumps(
            [
                {"name": "GOOD", "value": "v1"},
                {"name": "bad name", "value": "hunter2-value"},
                {"name": "KIND", "value": "v", "type": "ssh_key"},
                {"name": "IDP", "value": "v", "type": "sso_secret"},
            ]
        )
    )
    (tmp_path / "workers.json").write_text(json.dumps({"w1": {"name": "laptop"}, "w2": {"token": "123456"}}))
    data = load(tmp_path)
    assert [t.id for t in data.tasks] == ["7"]
    assert [c.name for c in data.credentials] == ["GOOD"]
    assert [w.id for w in data.workers] == ["w1"]
    lines = [p.line() for p in data.problems]
    assert lines == [
        "workers.json[1] id='w2': name: Field required",
        "tasks.json[1] id='x': description: Field required",
        "tasks.json[2] id='y': status: Value error, unknown status 'exploded'",
        "tasks.json[3] id='7': a second record with the same id",
        lines[4],
        lines[5],
        "credentials.json[3] name='IDP': type: Value error, type 'sso_secret' cannot be imported",
    ]
    assert lines[4].startswith("credentials.json[1] name='bad name': name: String should match pattern")
    assert lines[5].startswith("credentials.json[2] name='KIND': type: Input should be")
    assert all("hunter2" not in line for line in lines)
