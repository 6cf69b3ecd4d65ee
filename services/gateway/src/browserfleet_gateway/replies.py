"""How a route answers with a service's reply. Most return the reply as it is (FastAPI serialises it as the
route's response model); a change whose reply the client does not need (a delete, a revocation) answers 204
with no body, declared with `no_content_route` and answered with `no_content`.

Most routes are nothing but "the caller's actor, maybe an id from the path and the body, one call": those are
declared with `rpc_route`, one declaration each, so that what differs between them (path, endpoint, who may
call, summary, status) is all a reader sees."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from browserfleet_contracts.common import OrgScoped
from browserfleet_contracts.endpoints import Endpoint, Req
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Response
from fastapi.datastructures import Default
from fastapi.responses import JSONResponse
from starlette import status as http

from .deps import IdPath, Principal, RpcDep

_Route = TypeVar("_Route", bound=Callable[..., Any])
_Scoped = TypeVar("_Scoped", bound=OrgScoped)
_PATH_PARAM = re.compile(r"{(\w+)}")


def no_content_route(router: APIRouter, path: str, *, summary: str) -> Callable[[_Route], _Route]:
    """A DELETE at `path` that answers 204 with no body (and documents none)."""
    return router.delete(path, status_code=http.HTTP_204_NO_CONTENT, response_class=Response, summary=summary)


async def no_content(rpc: RpcClient, endpoint: Endpoint[Req, Any], request: Req) -> Response:
    """Calls `endpoint` and answers 204 once it has done the change; a refusal is its error, as ever."""
    await rpc.call(endpoint, request)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


def rpc_route(
    router: APIRouter,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"],
    path: str,
    endpoint: Endpoint[_Scoped, Any],
    principal: object,
    *,
    name: str,
    summary: str,
    body: str | None = None,
    status_code: int | None = None,
    path_param: object = IdPath,
) -> None:
    """Declares on `router` a route whose whole work is one call of `endpoint`, answering its reply as
    `endpoint.reply` (204 and no body when `status_code` says so).

    The request is built from:
    - the caller's `Actor`, from `principal` (an `Annotated[Principal, Depends(access(...))]`: the route's
      access rule is the one given here);
    - the path's parameter, an `IdPath` unless `path_param` says otherwise, as the request's field of the
      same name, else as its `id`;
    - when `body` names one of the request's fields, the JSON body as that field (its type is the field's).

    `name` is what FastAPI would have taken from a handler's name: the operation id's stem, and the audit
    action's."""
    fields = endpoint.request.model_fields
    ids = {param: param if param in fields else "id" for param in _PATH_PARAM.findall(path)}
    if not set(ids.values()) <= fields.keys() or (body is not None and body not in fields):
        raise TypeError(f"{name}: {endpoint.request.__name__} has no field for {path!r} or body {body!r}")
    no_body = status_code == http.HTTP_204_NO_CONTENT

    async def handler(**values: Any) -> Any:
        caller: Principal = values["principal"]
        request = endpoint.request(
            actor=caller.actor,
            **{field: values[param] for param, field in ids.items()},
            **({body: values["body"]} if body is not None else {}),
        )
        reply = await values["rpc"].call(endpoint, request)
        return Response(status_code=http.HTTP_204_NO_CONTENT) if no_body else reply

    # FastAPI reads the parameters (and so the route's dependencies) from the signature; the order is a
    # handwritten handler's: path, body, principal, rpc
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter(param, keyword, annotation=path_param) for param in ids]
    if body is not None:
        params.append(inspect.Parameter("body", keyword, annotation=fields[body].annotation))
    params.append(inspect.Parameter("principal", keyword, annotation=principal))
    params.append(inspect.Parameter("rpc", keyword, annotation=RpcDep))
    handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    router.add_api_route(
        path,
        handler,
        methods=[method],
        name=name,
        summary=summary,
        status_code=status_code,
        response_model=None if no_body else endpoint.reply,
        response_class=Response if no_body else Default(JSONResponse),
    )
