"""The gateway's NATS KV buckets come back when they are gone (a NATS restart empties a memory bucket; an
operator may delete one), without restarting the gateway: the shared rate-limit bucket (`rate_limits`) is
created again by the first write that finds no stream behind it, and the replicas limit together again
instead of each on its own; the WebSocket tickets bucket likewise on the next ticket. Real NATS; the
bucket is deleted with the JetStream API, which is what a restarted in-memory bucket amounts to."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_gateway.deps import Principal
from browserfleet_gateway.eventstream.tickets import TicketStore
from nats.aio.client import Client as NatsClient
from nats.js.errors import BucketNotFoundError

from .conftest import Signer
from .test_shared_limits import SLOW, replicas  # noqa: F401 (the fixture: two gateway replicas)


async def test_the_shared_limit_holds_again_after_its_bucket_was_lost(
    replicas: Callable[..., Any],  # noqa: F811
    signer: Signer,
    gateway_nc: NatsClient,
) -> None:
    one, two = await replicas(
        2, rate_limit_store="nats", rate_limit_per_second=SLOW, rate_limit_burst=4, login_rate_per_second=0
    )

    async def eight_requests() -> list[int]:
        token = {"Authorization": f"Bearer {signer.token(sub=f'u-{uuid.uuid4().hex[:8]}')}"}
        codes = []
        for i in range(8):  # alternately through each replica, as a load balancer spreads them
            async with (one if i % 2 == 0 else two)("127.0.0.1") as client:
                codes.append((await client.get("/api/v1/tasks", headers=token)).status_code)
        return codes

    assert await eight_requests() == [200] * 4 + [429] * 4
    js = gateway_nc.jetstream()
    await js.delete_key_value(subjects.RATE_LIMITS_BUCKET)
    with pytest.raises(BucketNotFoundError):
        await js.key_value(subjects.RATE_LIMITS_BUCKET)
    # per replica this would be [200] * 8: each replica's own burst of 4
    assert await eight_requests() == [200] * 4 + [429] * 4
    await js.key_value(subjects.RATE_LIMITS_BUCKET)  # there again


async def test_a_ticket_is_issued_and_redeemed_after_its_bucket_was_lost(gateway_nc: NatsClient) -> None:
    store = TicketStore(gateway_nc, ttl_seconds=30)
    principal = Principal(actor=Actor(org_id="o-1", user_id="u-1"), claims={})
    first, _ = await store.issue(principal, None, None)
    await gateway_nc.jetstream().delete_key_value(subjects.WS_TICKETS_BUCKET)
    assert await store.redeem(first) is None  # it went with its bucket
    ticket, _ = await store.issue(principal, None, None)
    holder = await store.redeem(ticket)
    assert holder is not None and holder.actor.user_id == "u-1"
    assert await store.redeem(ticket) is None  # once
