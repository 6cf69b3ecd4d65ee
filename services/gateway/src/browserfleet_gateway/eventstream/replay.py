"""Reading one organization's past events from EVENTS, for a client that resumes with `since`.

A consumer of our own per replay, filtered to `events.<org>.>` so another organization's events never even
reach this process for it, starting at `since + 1`, without acknowledgements, in memory, deleted when done
(and by the server after `INACTIVE_SECONDS` should this gateway die first).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator

from browserfleet_contracts import subjects
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamInfo

from .messages import Event, parse

BATCH = 256
FETCH_TIMEOUT_SECONDS = 5.0
INACTIVE_SECONDS = 30.0


async def stream_state(js: JetStreamContext) -> StreamInfo:
    return await js.stream_info(subjects.EVENTS_STREAM)


async def replay(js: JetStreamContext, org_id: str, since: int, upto: int) -> AsyncGenerator[Event, None]:
    """The organization's events with `since < seq <= upto`, in stream order. Messages that are not events
    are skipped (see `messages.parse`)."""
    if since >= upto:
        return
    name = f"ws-replay-{uuid.uuid4().hex}"
    config = ConsumerConfig(
        name=name,
        filter_subject=subjects.org_events(org_id),
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=since + 1,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=INACTIVE_SECONDS,
        mem_storage=True,
        num_replicas=1,
    )
    info = await js.add_consumer(subjects.EVENTS_STREAM, config=config)
    try:
        if info.num_pending == 0:
            return
        psub = await js.pull_subscribe_bind(consumer=name, stream=subjects.EVENTS_STREAM)
        try:
            while True:
                # everything up to `upto` is stored already, so a fetch that finds nothing means we are done;
                # the pending count decides before that, the timeout only guards a server that went away
                msgs = await psub.fetch(BATCH, timeout=FETCH_TIMEOUT_SECONDS)
                for msg in msgs:
                    meta = msg.metadata
                    seq = meta.sequence.stream
                    if seq > upto:
                        return
                    event = parse(seq, msg.subject, msg.data)
                    if event is not None:
                        yield event
                    if seq == upto or meta.num_pending == 0:
                        return
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(subjects.EVENTS_STREAM, name)
