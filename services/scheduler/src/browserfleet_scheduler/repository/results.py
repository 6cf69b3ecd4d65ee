"""Results that end running attempts, a batch of them in one statement: each task's verdict, its attempt closed
and its event in the outbox, for every task still running that attempt for that worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .driver import Fixed


@dataclass(frozen=True)
class Finish:
    """One result to record. `result`, `artifacts`: JSON text; `event`: the halves of the event's subject
    around the org, its msg id and its envelope as JSON, whose org, webhook_url, data.result and
    data.execution_time the statement fills in from the row it writes (`events.finished_template`)."""

    task_id: str
    attempt: int
    worker_id: str
    status: str
    result: str | None
    error_message: str | None
    error_step: int | None
    execution_time: float | None
    artifacts: str
    event: tuple[str, str, str, str]


# The batch's rows are locked in id order first (two replicas' batches cannot deadlock on each other). A task
# is written only while it runs the reported attempt for the reporting worker, and only when it stores no
# artifacts yet (this attempt's replace any it reported before; another attempt's are merged by
# `outcomes.with_attempt_artifacts`, on the transaction path): anything else is not written here, and the
# caller takes the transaction path for it. The callers pass only statuses the state machine lets a running
# task take. Returns, per written task, its outbox row (id NULL when the msg id was already there). The status
# test is `(...) IS TRUE` so that no index serves it: the rows are found by id (`claim_batch` says why).
FINISH = Fixed(
    text(
        """
    WITH d AS (
        SELECT * FROM unnest(
            CAST(:ids AS varchar[]), CAST(:attempts AS integer[]), CAST(:worker_ids AS varchar[]),
            CAST(:statuses AS varchar[]), CAST(:results AS text[]), CAST(:errors AS text[]),
            CAST(:error_steps AS integer[]), CAST(:exec_times AS float8[]), CAST(:artifacts AS text[]),
            CAST(:heads AS text[]), CAST(:tails AS text[]), CAST(:msg_ids AS varchar[]), CAST(:envelopes AS text[])
        ) AS d(id, attempt, worker_id, status, result, error, error_step, exec_time, artifacts, head, tail,
               msg_id, envelope)
    ), locked AS (
        SELECT t.id FROM scheduler.tasks t
         WHERE t.id = ANY(CAST(:ids AS varchar[]))
         ORDER BY t.id
           FOR UPDATE
    ), finished AS (
        UPDATE scheduler.tasks t
           SET status = d.status, result = CAST(d.result AS jsonb), error_message = d.error,
               error_step = d.error_step, status_detail = NULL, artifacts = CAST(d.artifacts AS jsonb),
               completed_at = :now, updated_at = :now,
               execution_time_seconds = COALESCE(
                   d.exec_time, EXTRACT(EPOCH FROM CAST(:now AS timestamptz) - t.started_at))
          FROM d
         WHERE t.id = d.id AND t.id IN (SELECT id FROM locked)
           AND (t.status = 'running') IS TRUE AND t.attempt = d.attempt AND t.worker_id = d.worker_id
           AND t.artifacts = '[]'::jsonb
        RETURNING t.id, t.org_id, t.webhook_url, t.attempt, t.result, t.execution_time_seconds, d.status,
                  d.error, d.head, d.tail, d.msg_id, d.envelope
    ), closed AS (
        UPDATE scheduler.task_attempts a
           SET status = f.status, finished_at = :now, error = f.error
          FROM finished f
         WHERE a.task_id = f.id AND a.attempt = f.attempt AND a.finished_at IS NULL
    ), announced AS (
        INSERT INTO scheduler.outbox (subject, msg_id, payload, created_at)
        SELECT f.head || f.org_id || f.tail, f.msg_id,
               convert_to(
                   jsonb_set(
                       jsonb_set(
                           jsonb_set(
                               jsonb_set(CAST(f.envelope AS jsonb), '{org_id}', to_jsonb(f.org_id)),
                               '{webhook_url}', COALESCE(to_jsonb(f.webhook_url), 'null'::jsonb)
                           ),
                           '{data,result}', COALESCE(f.result, 'null'::jsonb)
                       ),
                       '{data,execution_time}', COALESCE(to_jsonb(f.execution_time_seconds), 'null'::jsonb)
                   )::text,
                   'UTF8'
               ),
               :now
          FROM finished f
        ON CONFLICT (msg_id) DO NOTHING
        RETURNING id, subject, payload, msg_id
    )
    SELECT f.id AS task_id, a.id, a.subject, a.payload, a.msg_id
      FROM finished f LEFT JOIN announced a ON a.msg_id = f.msg_id
    """
    )
)


@dataclass(frozen=True)
class Finished:
    task_ids: set[str]  # the tasks written
    outbox: list[tuple[int, str, bytes, str]]  # (id, subject, payload, msg id) of the events inserted


async def finish_running(conn: AsyncConnection, finishes: Sequence[Finish], now: datetime) -> Finished:
    """Record `finishes` (one per task) in one statement on an autocommit connection: each task's write, its
    attempt's close and its event commit together, or none of the batch does."""
    rows = await FINISH.rows(conn, finish_params(finishes, now))
    return Finished(
        {r.task_id for r in rows},
        [(int(r.id), r.subject, bytes(r.payload), r.msg_id) for r in rows if r.id is not None],
    )


def finish_params(finishes: Sequence[Finish], now: datetime) -> dict[str, Any]:
    """FINISH's parameters for `finishes`."""
    return {
        "now": now,
        "ids": [f.task_id for f in finishes],
        "attempts": [f.attempt for f in finishes],
        "worker_ids": [f.worker_id for f in finishes],
        "statuses": [f.status for f in finishes],
        "results": [f.result for f in finishes],
        "errors": [f.error_message for f in finishes],
        "error_steps": [f.error_step for f in finishes],
        "exec_times": [f.execution_time for f in finishes],
        "artifacts": [f.artifacts for f in finishes],
        "heads": [f.event[0] for f in finishes],
        "tails": [f.event[1] for f in finishes],
        "msg_ids": [f.event[2] for f in finishes],
        "envelopes": [f.event[3] for f in finishes],
    }
