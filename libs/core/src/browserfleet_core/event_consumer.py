"""The durable consumer a service keeps of some events on EVENTS (a filter such as
`events.*.organization.deleted`), served by FastStream: the organization-deletion consumers (`org_events`)
and the scheduler's worker-revocation consumer are declared with `events_subscriber`."""

from __future__ import annotations

from browserfleet_contracts import subjects
from faststream import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from faststream.nats.subscriber import PullStreamSubscriber

from .batching import durable_config

# an event in hand this long unacknowledged (a slow purge, a crashed replica) is offered again
ACK_WAIT_SECONDS = 60.0
MAX_ACK_PENDING = 100


def events_subscriber(
    router: NatsRouter, filter_subject: str, durable: str, *, batch_size: int, title: str, description: str
) -> PullStreamSubscriber:
    """`@events_subscriber(router, ...)` on a handler taking the `NatsMessage`, which settles each message
    itself (ack, nack with a delay to have it offered again, reject a malformed one). The durable delivers
    every event from the start of the stream, so a replica or a consumer started after an event still sees
    it, and redelivers without limit: handlers are idempotent."""
    return router.subscriber(
        filter_subject,
        stream=JStream(subjects.EVENTS_STREAM, declare=False),
        durable=durable,
        config=durable_config(
            durable, filter_subject, max_ack_pending=MAX_ACK_PENDING, ack_wait=ACK_WAIT_SECONDS
        ),
        pull_sub=PullSub(batch_size=batch_size, timeout=5.0),
        ack_policy=AckPolicy.MANUAL,
        title=title,
        description=description,
    )
