"""Who may say what on the bus: the identities that connect to NATS, and for each one the subjects it
publishes and subscribes besides request/reply (those are declared on each `Endpoint`: `queue` serves it,
`callers` may request it).

`browserfleet_core.busauth` turns these declarations, with the endpoints', into each identity's NATS
allow-lists and the server configuration; the callout in worker-gateway uses `worker_grant` for each worker.
Nothing here spells a subject: every one comes from the builders in `subjects`, so a renamed subject moves
its permission with it (docs/architecture.md "Securing the bus").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from . import subjects

# --- identities ----------------------------------------------------------------------------------------
# A service's identity is its NATS user name and the queue group of the endpoints it serves.
GATEWAY: Final = "gateway"
AUTH: Final = "auth"
SCHEDULER: Final = "scheduler"
VAULT: Final = "vault"
WEBHOOKS: Final = "webhooks"
WORKER_GATEWAY: Final = "worker-gateway"
SERVICES: Final = (GATEWAY, AUTH, SCHEDULER, VAULT, WEBHOOKS, WORKER_GATEWAY)
# One identity per registered worker, issued by worker-gateway's auth callout for the key it presents.
WORKER: Final = "worker"
# A worker that holds only an invite code: it may register, nothing else.
REGISTRANT: Final = "registrant"
# Dev stack and tests only: the launcher's bootstrap and probes, and the test client that reads everything.
ADMIN: Final = "admin"
# worker-gateway's second connection, in the server's system account: it cuts a revoked worker's connection.
WORKER_GATEWAY_SYSTEM: Final = "worker-gateway-sys"

# the NATS accounts of the generated server configuration
APP_ACCOUNT: Final = "BF"
SYSTEM_ACCOUNT: Final = "SYS"

# What a service may call when no `callers` are declared on an endpoint: the gateway, which establishes the
# `Actor` of every org-scoped request. Nobody else may assert an organization's actor.
DEFAULT_CALLERS: Final = (GATEWAY,)


# --- reply inboxes -------------------------------------------------------------------------------------
def inbox_prefix(identity: str) -> str:
    """`_INBOX_<identity>`: a service's replies arrive under it, and only it may subscribe there, so nobody
    reads another identity's replies (login tokens, vault releases)."""
    return f"_INBOX_{identity}"


def _digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()[:24]


def worker_inbox_prefix(worker_key: str) -> str:
    """A worker's inbox, derived from its key: a worker started with only WORKER_KEY does not know its id
    before its first request, and the callout knows the key. The digest says nothing about the key."""
    return f"_INBOX_w{_digest(worker_key)}"


def registrant_inbox_prefix(invite_code: str) -> str:
    return f"_INBOX_r{_digest(invite_code)}"


# --- what each identity publishes and subscribes besides request/reply ------------------------------------
@dataclass(frozen=True)
class Grant:
    """Subjects an identity may publish / subscribe (NATS wildcards allowed), beyond its inbox, the endpoints
    it serves (subscribe, with responses allowed) and the endpoints that name it among their callers
    (publish). `streams`: the JetStream streams whose messages it acknowledges (`$JS.ACK.<stream>.>`)."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()


# EVENTS are published by the service that owns the entity (`events.<org>.<entity>.<event>`).
EVENT_EMITTERS: Final = {
    "task": SCHEDULER,
    "security": SCHEDULER,  # a worker reports blocked requests on TASK_UPDATES; the scheduler emits them
    "organization": AUTH,
    "worker": WORKER_GATEWAY,
    "credential": VAULT,
    "webhook": WEBHOOKS,
}


def events_of(identity: str) -> tuple[str, ...]:
    return tuple(
        subjects.event("*", f"{entity}.>") for entity, who in EVENT_EMITTERS.items() if who == identity
    )


_ARTIFACTS: Final = f"$O.{subjects.ARTIFACTS_BUCKET}.>"
_TICKETS: Final = f"$KV.{subjects.WS_TICKETS_BUCKET}.>"
_RATE_LIMITS: Final = f"$KV.{subjects.RATE_LIMITS_BUCKET}.>"
# what a gateway asks of the worker running a task; the worker answers on `frames`
_LIVE_OPS_TO_WORKER: Final = ("start", "stop", "input")
_LIVE_TO_WORKER: Final = tuple(subjects.live_pattern(op) for op in _LIVE_OPS_TO_WORKER)

GRANTS: Final[dict[str, Grant]] = {
    GATEWAY: Grant(
        publish=(*_LIVE_TO_WORKER, _TICKETS, _RATE_LIMITS),
        subscribe=(subjects.API_KEY_REVOKED, subjects.USER_CHANGED, subjects.live_pattern("frames")),
        streams=(subjects.EVENTS_STREAM,),
    ),
    AUTH: Grant(
        publish=(subjects.API_KEY_REVOKED, subjects.USER_CHANGED, *events_of(AUTH)),
        subscribe=(subjects.WORKER_REVOKED,),
        streams=(subjects.EVENTS_STREAM,),
    ),
    SCHEDULER: Grant(
        publish=(subjects.TASKS_ALL, subjects.task_cancel("*"), *events_of(SCHEDULER)),
        subscribe=(subjects.WORKER_REVOKED,),
        streams=(subjects.TASK_UPDATES_STREAM, subjects.EVENTS_STREAM),
    ),
    VAULT: Grant(
        publish=events_of(VAULT),
        subscribe=(subjects.WORKER_REVOKED,),
        streams=(subjects.EVENTS_STREAM,),
    ),
    WEBHOOKS: Grant(publish=events_of(WEBHOOKS), streams=(subjects.EVENTS_STREAM,)),
    WORKER_GATEWAY: Grant(
        # the artifact metadata a worker's commit writes once the claim is checked (artifacts.py there)
        publish=(subjects.WORKER_REVOKED, subjects.worker_drain("*"), _ARTIFACTS, *events_of(WORKER_GATEWAY)),
        subscribe=(subjects.AUTH_CALLOUT, subjects.WORKER_REVOKED),
        streams=(subjects.EVENTS_STREAM,),
    ),
}


# --- one worker ------------------------------------------------------------------------------------------
def worker_grant(worker_id: str, pool: str) -> Grant:
    """What the worker `worker_id` of pool `pool` may do besides calling the endpoints that name it: pull
    and settle its pool's TASKS messages (and no other pool's), hear its pool's doorbell, cancellations, its
    own drain and live-view requests, publish updates and live frames only under its own id, and write
    artifact chunks (the metadata that makes them an artifact is written by worker-gateway after it checked
    the claim)."""
    stream = subjects.TASKS_STREAM
    # a permission wildcard is a whole token, so each priority's consumer is named
    consumers = [subjects.task_run_consumer(pool, priority) for priority in subjects.PRIORITIES]
    return Grant(
        publish=(
            *(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}" for consumer in consumers),
            *(f"$JS.ACK.{stream}.{consumer}.>" for consumer in consumers),
            subjects.task_update(worker_id, "*"),
            subjects.live_pattern("frames", worker_id=worker_id),
            f"$O.{subjects.ARTIFACTS_BUCKET}.C.>",
        ),
        subscribe=(
            subjects.task_run(pool, "*"),
            subjects.task_cancel("*"),
            subjects.worker_drain(worker_id),
            *(subjects.live_pattern(op, worker_id=worker_id) for op in _LIVE_OPS_TO_WORKER),
        ),
    )
