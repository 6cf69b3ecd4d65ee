"""How a route answers with a service's reply. Most return the reply as it is (FastAPI serialises it as the
route's response model); a change whose reply the client does not need (a delete, a revocation) answers 204
with no body, declared with `no_content_route` and answered with `no_content`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from browserfleet_contracts.endpoints import Endpoint, Req
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Response
from starlette import status as http

_Route = TypeVar("_Route", bound=Callable[..., Any])


def no_content_route(router: APIRouter, path: str, *, summary: str) -> Callable[[_Route], _Route]:
    """A DELETE at `path` that answers 204 with no body (and documents none)."""
    return router.delete(path, status_code=http.HTTP_204_NO_CONTENT, response_class=Response, summary=summary)


async def no_content(rpc: RpcClient, endpoint: Endpoint[Req, Any], request: Req) -> Response:
    """Calls `endpoint` and answers 204 once it has done the change; a refusal is its error, as ever."""
    await rpc.call(endpoint, request)
    return Response(status_code=http.HTTP_204_NO_CONTENT)
