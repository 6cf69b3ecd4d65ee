"""The worker-gateway's subjects (`svc.workers.*`)."""

from __future__ import annotations

from ..artifacts import ArtifactChunk, ArtifactCommitRequest, ArtifactReadRequest
from ..bus import AUTH, GATEWAY, REGISTRANT, SCHEDULER, VAULT, WORKER, WORKER_GATEWAY
from ..common import Ack, ById
from ..tasks import ArtifactRef
from ..workers import (
    CreateInviteRequest,
    DeregisterRequest,
    Heartbeat,
    HeartbeatReply,
    InviteInfo,
    InvitePublic,
    ListInvitesRequest,
    ListWorkersRequest,
    PoolInfo,
    PoolsRequest,
    RegisterReply,
    RegisterRequest,
    RotateKeyRequest,
    WorkerAuthRequest,
    WorkerIdentity,
    WorkerPublic,
    WorkerStatusRequest,
)
from .base import Service, _ep


class Workers(Service, queue=WORKER_GATEWAY, token="workers"):
    CREATE_INVITE = _ep(
        CreateInviteRequest,
        InvitePublic,
        "An invite code (in this reply only): one-time, or a pool invite (`multi_use`) whose every "
        "registration is a worker of its own in the invite's pool, with its tags, until it expires or is revoked.",
    )
    LIST_INVITES = _ep(
        ListInvitesRequest,
        list[InviteInfo],
        "The org's invites (without their codes), newest first.",
    )
    REVOKE_INVITE = _ep(
        ById,
        InviteInfo,
        "Revoke an invite of the org (idempotent): no further registration; workers it registered stay.",
    )
    REGISTER = _ep(
        RegisterRequest,
        RegisterReply,
        "Trade an invite code (and the worker's device info and X25519 public key) for a worker identity "
        "and its `sk_worker_…` key (this reply only). 401 for an unknown, used, expired or revoked code.",
        callers=(GATEWAY, REGISTRANT),
    )
    ROTATE_KEY = _ep(
        RotateKeyRequest,
        WorkerIdentity,
        "A known worker's new X25519 public key (sent at every start); clears a drain of its previous run.",
        callers=(GATEWAY, WORKER),
    )
    HEARTBEAT = _ep(
        Heartbeat,
        HeartbeatReply,
        "A worker's presence: running tasks, slots; the reply says whether an admin asked it to drain.",
        callers=(WORKER,),
    )
    STATUS = _ep(
        WorkerStatusRequest,
        WorkerPublic,
        "A worker reports its own status (online, busy, draining, error, offline); 404 for another worker's id.",
        callers=(GATEWAY, WORKER),
    )
    DEREGISTER = _ep(
        DeregisterRequest,
        Ack,
        "A worker leaves for good (a pool replica's clean shutdown): its identity and key are removed.",
        callers=(GATEWAY, WORKER),
    )
    AUTHENTICATE = _ep(
        WorkerAuthRequest,
        WorkerIdentity,
        "Who a worker key belongs to (id, org, pool, public key); 401 for an unknown or revoked key.",
        callers=(AUTH, SCHEDULER, VAULT, WORKER),
    )
    LIST = _ep(
        ListWorkersRequest,
        list[WorkerPublic],
        "The org's workers (and the platform's that serve it) with status, last_seen, pool, tags, device.",
    )
    DRAIN = _ep(
        ById,
        WorkerPublic,
        "Ask one of the org's workers to drain: no new tasks, running ones finish; emits worker.draining.",
    )
    REVOKE = _ep(
        ById,
        Ack,
        "Remove one of the org's workers: its key stops working at once (`workers.revoked`), its running "
        "attempts are given back, and worker.revoked is emitted.",
    )
    POOLS = _ep(
        PoolsRequest,
        list[PoolInfo],
        "Every registered pool (platform and organizations') with its tags: what the scheduler routes by.",
        callers=(SCHEDULER,),
    )
    COMMIT_ARTIFACT = _ep(
        ArtifactCommitRequest,
        ArtifactRef,
        "Make the chunks a worker published an artifact of the attempt it holds (browserfleet_contracts."
        "artifacts); 403 for an attempt the worker does not hold, 422 for missing chunks.",
        callers=(WORKER,),
    )
    READ_ARTIFACT = _ep(
        ArtifactReadRequest,
        ArtifactChunk,
        "One chunk of an earlier artifact of the organization whose task the worker holds (an upload step); "
        "another organization's artifact is a 404, as a missing one.",
        callers=(WORKER,),
    )
