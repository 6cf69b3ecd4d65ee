"""Every NATS subject, stream and bucket name in one place.

Services never spell a subject by hand: they import it from here, so a rename is one edit and
`proto/asyncapi.yaml` cannot disagree with the code.
"""

from __future__ import annotations

from typing import Final

# --- JetStream streams -------------------------------------------------------------------------
TASKS_STREAM: Final = "TASKS"
TASK_UPDATES_STREAM: Final = "TASK_UPDATES"
EVENTS_STREAM: Final = "EVENTS"
ARTIFACTS_BUCKET: Final = "artifacts"
# single-use tickets for browser WebSockets, shared by every gateway replica (KV bucket)
WS_TICKETS_BUCKET: Final = "ws_tickets"
# the gateway's rate-limit state (one entry per principal or client address), shared by every replica (KV)
RATE_LIMITS_BUCKET: Final = "rate_limits"

DEFAULT_POOL: Final = "default"
PRIORITIES: Final = ("urgent", "high", "normal", "low")


def task_run(pool: str, priority: str) -> str:
    """`tasks.run.<pool>.<priority>`: one message per dispatch attempt (work-queue retention)."""
    return f"tasks.run.{pool}.{priority}"


def task_run_consumer(pool: str, priority: str) -> str:
    """Durable pull consumer shared by every worker of one pool, one per priority."""
    return f"pool-{pool}-{priority}"


def pool_key(name: str, org_id: str | None = None) -> str:
    """The subject token of a pool (`tasks.run.<key>.*`, consumers `pool-<key>-*`): its name for a platform
    pool, `<name>_<org_id>` for an organization's own. Pool names have no `_` (workers.POOL_NAME_PATTERN),
    so two organizations' pools, or an organization's and the platform's, never share a work-queue filter."""
    if not name or _UNSAFE_TOKEN & set(name) or "_" in name:
        raise ValueError(f"{name!r} cannot be a pool name")
    if org_id is None:
        return name
    if not org_id or _UNSAFE_TOKEN & set(org_id):
        raise ValueError(f"{org_id!r} cannot be a subject token")
    return f"{name}_{org_id}"


def task_update(worker_id: str, task_id: str) -> str:
    """`tasks.updates.<worker_id>.<task_id>`: worker -> scheduler (started, log, result, security). The worker's
    bus identity may publish only under its own id, and the scheduler records an update only from the
    attempt's claimant, so no worker can report for another's task."""
    return f"tasks.updates.{worker_id}.{task_id}"


def task_update_worker(subject: str) -> str | None:
    """The worker id an update's subject carries (None for a subject that is not an update's)."""
    parts = subject.split(".")
    return parts[2] if len(parts) == 4 and parts[:2] == ["tasks", "updates"] and parts[2] else None


def task_cancel(task_id: str) -> str:
    """Core NATS signal to the worker running `task_id`."""
    return f"tasks.cancel.{task_id}"


# the org token of events about platform-wide things (an operator's pool's workers): no organization's id
PLATFORM_EVENTS_ORG: Final = "platform"


def event(org_id: str, event_type: str) -> str:
    """`events.<org_id>.<entity>.<event>`, e.g. events.<org>.task.completed."""
    return f"events.{org_id}.{event_type}"


def org_events(org_id: str) -> str:
    """Every event of one organization (`events.<org_id>.>`): what a replay for that org reads. An id that
    is not one subject token (a `.`, a wildcard) would widen the filter to other organizations: refused."""
    if not org_id or _UNSAFE_TOKEN & set(org_id):
        raise ValueError(f"{org_id!r} cannot be a subject token")
    return event(org_id, ">")


# --- what each stream holds, derived from the subject builders above ---------------------------------
TASKS_ALL: Final = task_run("*", "*")
TASK_UPDATES_ALL: Final = task_update("*", "*")
EVENTS_ALL: Final = event("*", ">")


def dispatch_msg_id(task_id: str, attempt: int) -> str:
    """`Nats-Msg-Id` of an attempt's TASKS message: a re-publication (outbox replay) is a duplicate."""
    return f"{task_id}:{attempt}"


def update_msg_id(task_id: str, attempt: int, kind: str, seq: int | str | None = None) -> str:
    """`Nats-Msg-Id` of a worker's TASK_UPDATES message (`started`, `result`; a log batch by its first line's
    `seq`; a blocked request by its number or `summary`), so a worker that publishes again after a lost ack
    is stored once."""
    base = f"{task_id}:{attempt}:{kind}"
    return base if seq is None else f"{base}:{seq}"


def worker_drain(worker_id: str) -> str:
    """Core NATS request to one worker: stop taking work, finish or hand back running tasks, stay up."""
    return f"workers.drain.{worker_id}"


# --- the live view of a running task (core NATS, never stored) --------------------------------------
# `tasks.live.<task_id>.<worker_id>.<op>`: the worker id is the one the scheduler recorded for the running
# attempt, so only that worker answers, and a per-worker bus permission can bind each worker to its own id.
LIVE_OPS: Final = ("start", "stop", "frames", "input")
_UNSAFE_TOKEN = frozenset(".*> \t\r\n")


def _live(task_id: str, worker_id: str, op: str) -> str:
    for token in (task_id, worker_id):
        # ids come from the scheduler, but a wildcard or a dot here would widen what a subscriber receives
        if not token or _UNSAFE_TOKEN & set(token):
            raise ValueError(f"{token!r} cannot be a subject token")
    return live_pattern(op, task_id=task_id, worker_id=worker_id)


def live_pattern(op: str, *, task_id: str = "*", worker_id: str = "*") -> str:
    """The live-view subjects of `op` as a bus permission pattern (wildcards allowed, unlike the builders)."""
    if op not in LIVE_OPS:
        raise ValueError(f"{op!r} is not a live-view operation")
    return f"tasks.live.{task_id}.{worker_id}.{op}"


def live_start(task_id: str, worker_id: str) -> str:
    """Gateway -> the worker running `task_id`, request/reply: start (or keep) the screencast for a watcher.
    Renewed every `live.LIVE_KEEPALIVE_SECONDS` while someone watches; it is also the keepalive."""
    return _live(task_id, worker_id, "start")


def live_stop(task_id: str, worker_id: str) -> str:
    """Gateway -> worker: this watcher's last viewer left (the screencast stops when no watcher is left)."""
    return _live(task_id, worker_id, "stop")


def live_frames(task_id: str, worker_id: str) -> str:
    """Worker -> gateways: screencast frames and the end of the attempt (`live.LiveFrame` / `live.LiveEnded`)."""
    return _live(task_id, worker_id, "frames")


def live_input(task_id: str, worker_id: str) -> str:
    """Gateway -> worker: a person's mouse and keyboard input and `continue` for a paused task (takeover)."""
    return _live(task_id, worker_id, "input")


# --- core NATS broadcasts (no queue group) -------------------------------------------------------
# every gateway replica drops a revoked key from its cache at once (auth publishes after the commit)
API_KEY_REVOKED: Final = "auth.api_key.revoked"
# every gateway replica replaces its cached state of a user (active, role, valid-after, MFA) at once: auth
# publishes `auth.UserChanged` after the commit; the cache's short TTL bounds a missed one
USER_CHANGED: Final = "auth.user.changed"
# every cache of worker keys (scheduler, vault, auth) drops a removed worker at once (worker-gateway publishes
# `workers.WorkerRevoked` after the commit); the caches' TTL bounds a missed one
WORKER_REVOKED: Final = "workers.revoked"

# the server asks worker-gateway (auth callout, NATS >= 2.10) whether a worker's connection may come in
AUTH_CALLOUT: Final = "$SYS.REQ.USER.AUTH"

# The request/reply subjects (`svc.<service>.<op>`) are declared with their request and reply types in
# `browserfleet_contracts.endpoints`.
