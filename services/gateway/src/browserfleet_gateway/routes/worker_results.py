"""`POST /workers/tasks/{task_id}/result`: a worker that speaks HTTP reports the result of the attempt it
claimed, with its own `sk_worker_…` key. The scheduler records it exactly as a result on TASK_UPDATES, under
the bus's rules: only the attempt this worker claimed, a repeat changes nothing (200, `recorded: false`),
a task it never claimed is a 404 like another org's, an attempt no longer running is a 409."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.tasks import WorkerResultBody, WorkerResultReply, WorkerResultRequest
from fastapi import APIRouter, Depends

from ..deps import IdPath, RpcDep, worker_key
from ..errors import API_ERRORS

WorkerKey = Annotated[str, Depends(worker_key("the worker's own key, for an attempt it claimed only"))]

router = APIRouter(prefix="/workers/tasks", tags=["workers"], responses=API_ERRORS)


@router.post(
    "/{task_id}/result",
    response_model=WorkerResultReply,
    summary="A worker reports the result of the attempt it claimed (completed, failed or timed_out)",
)
async def report_result(
    task_id: IdPath, body: WorkerResultBody, key: WorkerKey, rpc: RpcDep
) -> WorkerResultReply:
    request = WorkerResultRequest(**body.model_dump(), task_id=task_id, worker_key=key)
    return await rpc.call(endpoints.Scheduler.REPORT_RESULT, request)
