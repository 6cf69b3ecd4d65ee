"""A task's `webhook_url` rides on the envelope of each of its events (created, started by the fast claim,
completed), never in their `data`, so the webhooks service can deliver them there too; a task without one
carries none. Real NATS JetStream and PostgreSQL."""

from __future__ import annotations

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope, EventType, task_event_id
from browserfleet_core.messaging import RpcClient
from nats.js import JetStreamContext

from .conftest import (
    DictAuthenticator,
    actor,
    claim,
    create_assigned,
    eventually,
    new_assigned,
    publish_update,
    result_update,
)

HOOK = "https://customer.example/task-result"


async def _events(js: JetStreamContext, org_id: str, count: int) -> list[EventEnvelope]:
    everything = subjects.org_events(org_id)
    await eventually(lambda: _at_least(js, everything, count), f"{count} events of the org on EVENTS")
    sub = await js.pull_subscribe(everything, stream=subjects.EVENTS_STREAM)
    try:
        msgs = await sub.fetch(count, timeout=10)
    finally:
        await sub.unsubscribe()
    return [EventEnvelope.model_validate_json(m.data) for m in msgs]


async def _at_least(js: JetStreamContext, subject: str, count: int) -> bool | None:
    info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
    return True if sum((info.state.subjects or {}).values()) >= count else None


async def test_every_event_of_a_task_carries_its_webhook_url(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    who, task, key, identity = await new_assigned(rpc, authenticator, webhook_url=HOOK)
    assert (await claim(rpc, task.id, key)).granted
    await publish_update(js, result_update(task.id, identity.worker_id, status="completed", result={}))

    events = await _events(js, who.org_id, 3)
    assert [e.type.value for e in events] == ["task.created", "task.started", "task.completed"]
    assert {e.webhook_url for e in events} == {HOOK}
    assert all("webhook_url" not in e.data for e in events)
    # the claim's event is made in SQL around the claimed row: its org, id and data as any other event's
    started = events[1]
    assert {e.org_id for e in events} == {who.org_id}
    assert started.id == task_event_id(task.id, EventType.TASK_STARTED, 1)
    assert started.data == {
        "task_id": task.id,
        "status": "running",
        "worker_id": identity.worker_id,
        "result": None,
        "error_message": None,
        "execution_time": None,
        "attempt": 1,
    }

    plain = actor()
    await create_assigned(rpc, plain)
    [created] = await _events(js, plain.org_id, 1)
    assert created.webhook_url is None
