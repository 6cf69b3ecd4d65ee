"""Claims by group commit: the fresh claims in hand while a statement is in flight are the next statement, each
task's move to `running`, its attempt row and its `task.started` outbox row, for all of them at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from browserfleet_core.db import Database
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import state
from .driver import Fixed, GroupCommit
from .tasks import Claim

# `d`: the batch, one row per claim numbered by its place in it. Of several claims of one task only the first
# is tried (DISTINCT ON ... ORDER BY n): the others get no row and take the locked path, which answers them
# as it would have one at a time (the task is running by then). The rows are locked in id order first, so
# two batches (two replicas, or a batch of results) cannot deadlock on each other. The UPDATE's WHERE is the
# state check, built from `state.allowed_from("running")`; a task that is not claimable at that attempt, or
# not by a worker of its org, gets no row. The `task.started` envelope is made in Python (all of it is known
# from the request) except what only the claimed row knows, its org and webhook_url, set into it here; so is
# the org in the subject, between the halves of `subjects.event(<org>, "task.started")`. The status test is
# written `(...) IS TRUE` so that no index can serve it: with the statistics of a quiet table PostgreSQL
# expected one task in that status and walked every one of them through the status index (hundreds under
# load) instead of probing the batch's ids.
CLAIM_MANY = Fixed(
    text(
        f"""
    WITH d AS (
        SELECT DISTINCT ON (v.id) v.*
          FROM unnest(
              CAST(:ns AS integer[]), CAST(:ids AS varchar[]), CAST(:attempts AS integer[]),
              CAST(:worker_ids AS varchar[]), CAST(:worker_orgs AS varchar[]), CAST(:deliveries AS integer[]),
              CAST(:heads AS text[]), CAST(:tails AS text[]), CAST(:msg_ids AS varchar[]),
              CAST(:envelopes AS text[]), CAST(:nows AS timestamptz[])
          ) AS v(n, id, attempt, worker_id, worker_org_id, delivery, head, tail, msg_id, envelope, at)
         ORDER BY v.id, v.n
    ), locked AS (
        SELECT t.id FROM scheduler.tasks t
         WHERE t.id = ANY(CAST(:ids AS varchar[]))
         ORDER BY t.id
           FOR UPDATE
    ), claimed AS (
        UPDATE scheduler.tasks t
           SET status = 'running', worker_id = d.worker_id, started_at = d.at, status_detail = NULL,
               updated_at = d.at
          FROM d
         WHERE t.id = d.id AND t.id IN (SELECT id FROM locked)
           AND (t.status IN ({", ".join(f"'{s}'" for s in sorted(state.allowed_from("running")))})) IS TRUE
           AND t.attempt = d.attempt
           AND (d.worker_org_id IS NULL OR t.org_id = d.worker_org_id)
        RETURNING d.n, t.id, t.org_id, t.attempt, t.priority, t.timeout_seconds, t.spec, t.webhook_url,
                  d.worker_id, d.delivery, d.head, d.tail, d.msg_id, d.envelope, d.at
    ), recorded AS (
        INSERT INTO scheduler.task_attempts (task_id, attempt, worker_id, status, claimed_at, delivery)
        SELECT id, attempt, worker_id, 'running', at, delivery FROM claimed
    ), announced AS (
        INSERT INTO scheduler.outbox (subject, msg_id, payload, created_at)
        SELECT c.head || c.org_id || c.tail, c.msg_id,
               convert_to(
                   jsonb_set(
                       jsonb_set(CAST(c.envelope AS jsonb), '{{org_id}}', to_jsonb(c.org_id)),
                       '{{webhook_url}}', COALESCE(to_jsonb(c.webhook_url), 'null'::jsonb)
                   )::text,
                   'UTF8'
               ),
               c.at
          FROM claimed c
        ON CONFLICT (msg_id) DO NOTHING
        RETURNING id, subject, payload, msg_id
    )
    SELECT c.n, c.id, c.org_id, c.attempt, c.priority, c.timeout_seconds, c.spec, c.webhook_url,
           a.id AS outbox_id, a.subject AS outbox_subject, a.payload AS outbox_payload
      FROM claimed c LEFT JOIN announced a ON a.msg_id = c.msg_id
    """  # noqa: S608 (what is interpolated is the state machine's status names, never input)
    )
)

ClaimWithEvent = tuple[Claim, tuple[str, str, str, str]]


async def claim_many(conn: AsyncConnection, claims: Sequence[ClaimWithEvent]) -> list[Any]:
    """Claims (each with its event: the subject's halves around the org, the msg id, and the envelope as JSON
    whose `org_id` and `webhook_url` the claimed row fills in) in one statement on an autocommit connection:
    every claim granted in it commits with its attempt row and outbox row, or none does. Answers each claim
    in order: its claimed row (id, org_id, attempt, priority, timeout_seconds, spec, webhook_url, and
    `outbox_id`, `outbox_subject`, `outbox_payload`, None when the msg id was already in the outbox), or None
    when the task was not claimable by it at that attempt (the caller's locked path says why)."""
    answers: list[Any] = [None] * len(claims)
    for row in await CLAIM_MANY.rows(conn, claim_params(claims)):
        answers[row.n] = row
    return answers


def claim_params(claims: Sequence[ClaimWithEvent]) -> dict[str, Any]:
    """CLAIM_MANY's parameters for `claims`."""
    return {
        "ns": list(range(len(claims))),
        "ids": [c.task_id for c, _ in claims],
        "attempts": [c.attempt for c, _ in claims],
        "worker_ids": [c.worker_id for c, _ in claims],
        "worker_orgs": [c.worker_org_id for c, _ in claims],
        "deliveries": [c.delivery for c, _ in claims],
        "heads": [e[0] for _, e in claims],
        "tails": [e[1] for _, e in claims],
        "msg_ids": [e[2] for _, e in claims],
        "envelopes": [e[3] for _, e in claims],
        "nows": [c.now for c, _ in claims],
    }


def _new_claim_writer(db: Database) -> GroupCommit[ClaimWithEvent, Any]:
    return GroupCommit(db, claim_many)


def claim_writer(db: Database) -> GroupCommit[ClaimWithEvent, Any]:
    """The one group-committing claim writer of `db` (`submit((claim, event))` answers as `claim_many`), kept
    by `db` (the writer holds it, so a weak-keyed map could never let it go)."""
    return db.attached(_new_claim_writer)
