"""A worker's report of a blocked request (a `security` update: workers may not publish on EVENTS) becomes
`security.request_blocked` of the task's organization through the scheduler's outbox, from the attempt's
worker only; a report by another worker, or one naming someone else than its sender, emits nothing (real
NATS, real PostgreSQL)."""

from __future__ import annotations

import asyncio

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope, RequestBlockedData
from browserfleet_contracts.tasks import TaskUpdateMessage
from browserfleet_core.messaging import RpcClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .conftest import DictAuthenticator, claim, new_assigned, updates_consumed


def _report(
    task_id: str, worker_id: str, seq: int, *, org_claimed: str = "someone-else"
) -> TaskUpdateMessage:
    data = RequestBlockedData(
        task_id="not-this-one",  # the scheduler fills in the task and attempt it checked
        attempt=9,
        seq=seq,
        kind="domain",
        host="evil.example",
        reason=f"evil.example is not in the task's allowed domains ({org_claimed})",
    )
    return TaskUpdateMessage(
        task_id=task_id,
        attempt=1,
        worker_id=worker_id,
        kind="security",
        security=data.model_dump(mode="json"),
    )


async def test_the_holders_report_becomes_its_orgs_event_and_nobody_elses_does(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    who, task, key, holder = await new_assigned(rpc, authenticator)
    _, other = authenticator.add()
    assert (await claim(rpc, task.id, key, delivery=1)).granted
    seen: list[EventEnvelope] = []

    async def on_event(msg: Msg) -> None:
        seen.append(EventEnvelope.model_validate_json(msg.data))

    sub = await js._nc.subscribe(subjects.event("*", "security.request_blocked"), cb=on_event)
    try:
        # another worker about the holder's attempt, under its own id; and under the holder's id on its own
        # subject: both recorded as nothing
        await js.publish(
            subjects.task_update(other.worker_id, task.id),
            _report(task.id, other.worker_id, 1).model_dump_json().encode(),
        )
        await js.publish(
            subjects.task_update(other.worker_id, task.id),
            _report(task.id, holder.worker_id, 2).model_dump_json().encode(),
        )
        ack = await js.publish(
            subjects.task_update(holder.worker_id, task.id),
            _report(task.id, holder.worker_id, 3).model_dump_json().encode(),
        )
        await updates_consumed(js, int(ack.seq))
        for _ in range(200):  # the outbox publishes after the commit
            if seen:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        await sub.unsubscribe()
    assert [(e.org_id, e.id) for e in seen] == [(who.org_id, f"{task.id}:1:blocked:3")]
    data = RequestBlockedData.model_validate(seen[0].data)
    assert (data.task_id, data.attempt, data.host) == (task.id, 1, "evil.example")
