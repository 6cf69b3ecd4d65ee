"""The quick chaos run (`make chaos-quick`) under `make test`: the supervised dev stack under a steady load of
tasks, each fault once (kill -9 a worker, the scheduler, webhooks, worker-gateway, NATS, PostgreSQL; the
webhook receiver down), and after each every task ended exactly once and every event reached the receiver.
It asserts outcomes, never how fast: the recovery times are figures for `make chaos` to report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .__main__ import table
from .run import ChaosRun, Sizes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SUPERVISED = ("scheduler", "webhooks", "worker-gateway", "nats", "postgres")


def _explain(figures: dict[str, Any]) -> str:
    import json

    return table(figures) + "\n" + json.dumps(figures["totals"], indent=1, default=str)


async def test_every_task_ends_once_and_every_event_arrives_through_every_fault(tmp_path: Path) -> None:
    figures = await ChaosRun(Sizes.quick(), tmp_path).run()
    totals, why = figures["totals"], _explain(figures)
    targets = [ph["target"] for ph in figures["faults"]]
    assert set(SUPERVISED) | {"receiver"} <= set(targets), why
    assert any(t.startswith("protocol-worker") for t in targets), why
    assert totals["accepted"] == totals["tasks"] > 0, why
    assert totals["lost"] == 0, why
    assert totals["completed_twice_on_events"] == 0 and totals["ended_twice_on_events"] == 0, why
    assert totals["completed_twice_in_scheduler"] == 0, why
    assert totals["retried_submit_got_another_task"] == 0, why
    assert totals["statuses"] == {"completed": totals["accepted"]}, why
    assert totals["webhooks"]["events_missing"] == 0 and totals["webhooks"]["bad_signatures"] == 0, why
    assert totals["dev_stack_gave_up"] is None, why
    for phase in figures["faults"]:
        if phase["target"] in SUPERVISED:  # the dev stack, not the run, brought it back
            assert phase.get("restarted_after_s") is not None, why
    restarted = {r["unit"] for r in totals["restarts_by_the_dev_stack"]}
    assert set(SUPERVISED) <= restarted, why
    assert (tmp_path / "chaos.log").is_file()  # every process's lines, for whoever reads a failure
