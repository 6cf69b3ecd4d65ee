"""How a route answers with a service's reply. Most return the reply as it is (FastAPI serialises it as the
route's response model); a change whose reply the client does not need (a delete, a revocation) answers 204
with no body (`status_code=204` on a declared route; `no_content_route` and `no_content` for a handwritten one).

Most routes are nothing but one call: "the caller's actor, maybe an id from the path and the body" (`rpc_route`),
or for a public route "the body, maybe with the caller's address" (`relay_route`). Those are declared, one
declaration a route, so that what differs between them (path, endpoint, who may call, summary, status) is all a
reader sees."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from browserfleet_contracts.common import OrgScoped
from browserfleet_contracts.endpoints import Endpoint, Req
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Depends, Request, Response
from fastapi.datastructures import Default
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette import status as http

from . import hotreads
from .deps import IdPath, Principal, RpcDep, client_ip

_Route = TypeVar("_Route", bound=Callable[..., Any])
_Scoped = TypeVar("_Scoped", bound=OrgScoped)
_PATH_PARAM = re.compile(r"{(\w+)}")
_Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def no_content_route(router: APIRouter, path: str, *, summary: str) -> Callable[[_Route], _Route]:
    """A DELETE at `path` that answers 204 with no body (and documents none)."""
    return router.delete(path, status_code=http.HTTP_204_NO_CONTENT, response_class=Response, summary=summary)


async def no_content(rpc: RpcClient, endpoint: Endpoint[Req, Any], request: Req) -> Response:
    """Calls `endpoint` and answers 204 once it has done the change; a refusal is its error, as ever."""
    await rpc.call(endpoint, request)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


def rpc_route(
    router: APIRouter,
    method: _Method,
    path: str,
    endpoint: Endpoint[_Scoped, Any],
    principal: object,
    *,
    name: str,
    summary: str,
    body: str | type[BaseModel] | None = None,
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
    - the JSON body, when there is one: if `body` names one of the request's fields, as that field (its type
      is the field's); if it is a model, its fields as the request's own (`MfaCode` for a request's `code`).

    `name` is what FastAPI would have taken from a handler's name: the operation id's stem, and the audit
    action's."""
    fields = endpoint.request.model_fields
    ids = {param: param if param in fields else "id" for param in _PATH_PARAM.findall(path)}
    filled = set(ids.values())
    filled |= {body} if isinstance(body, str) else set(body.model_fields) if body else set()
    if not filled <= fields.keys():
        raise TypeError(f"{name}: {endpoint.request.__name__} has no {sorted(filled - fields.keys())}")
    body_type = fields[body].annotation if isinstance(body, str) else body

    async def handler(**values: Any) -> Any:
        caller: Principal = values["principal"]
        given = {field: values[param] for param, field in ids.items()}
        if isinstance(body, str):
            given[body] = values["body"]
        elif body is not None:
            given.update(values["body"].model_dump())
        request = endpoint.request(actor=caller.actor, **given)
        return await _answer(values["rpc"], endpoint, request, status_code)

    # the parameters in a handwritten handler's order: path, body, principal, rpc
    params = [inspect.Parameter(param, _KEYWORD, annotation=path_param) for param in ids]
    if body_type is not None:
        params.append(inspect.Parameter("body", _KEYWORD, annotation=body_type))
    params.append(inspect.Parameter("principal", _KEYWORD, annotation=principal))
    _declare(
        router, method, path, endpoint, handler, params, name=name, summary=summary, status_code=status_code
    )


def hot_read_route(
    router: APIRouter,
    path: str,
    endpoint: Endpoint[_Scoped, Any],
    principal: object,
    *,
    name: str,
    summary: str,
) -> None:
    """`rpc_route` of a GET whose only path parameter is last (`/{task_id}`), also served by `hotreads`
    without FastAPI's per-request work: the same declaration, documentation and access rule."""
    rpc_route(router, "GET", path, endpoint, principal, name=name, summary=summary)
    route = router.routes[-1]
    assert isinstance(route, APIRoute) and route.name == name
    hotreads.declare(route, endpoint)


def relay_route(
    router: APIRouter,
    method: _Method,
    path: str,
    endpoint: Endpoint[Any, Any],
    access: Callable[..., Awaitable[None]],
    *,
    name: str,
    summary: str,
    body: type[BaseModel] | None = None,
    status_code: int | None = None,
) -> None:
    """Declares on `router` a public route (`access`: a `public(...)` declaration) that relays its JSON body to
    `endpoint` and answers the reply as `endpoint.reply`. The body is the request itself; or, given `body`, the
    request is that body's fields with the caller's address (`client_ip`), which a sign-in command records."""

    async def handler(**values: Any) -> Any:
        command = values["body"]
        if body is not None:
            command = endpoint.request(**command.model_dump(), client_ip=client_ip(values["request"]))
        return await _answer(values["rpc"], endpoint, command, status_code)

    params = [inspect.Parameter("body", _KEYWORD, annotation=body or endpoint.request)]
    if body is not None:
        params.append(inspect.Parameter("request", _KEYWORD, annotation=Request))
    _declare(
        router,
        method,
        path,
        endpoint,
        handler,
        params,
        name=name,
        summary=summary,
        status_code=status_code,
        dependencies=[Depends(access)],
    )


async def _answer(rpc: RpcClient, endpoint: Endpoint[Req, Any], request: Req, status_code: int | None) -> Any:
    if status_code == http.HTTP_204_NO_CONTENT:
        return await no_content(rpc, endpoint, request)
    return await rpc.call(endpoint, request)


def _declare(
    router: APIRouter,
    method: _Method,
    path: str,
    endpoint: Endpoint[Any, Any],
    handler: Callable[..., Awaitable[Any]],
    params: list[inspect.Parameter],
    *,
    name: str,
    summary: str,
    status_code: int | None,
    dependencies: list[Any] | None = None,
) -> None:
    """Adds `handler` with `params` and the RPC client as its signature: FastAPI reads the route's parameters
    and dependencies (the principal's access rule among them) from it."""
    params = [*params, inspect.Parameter("rpc", _KEYWORD, annotation=RpcDep)]
    handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    no_body = status_code == http.HTTP_204_NO_CONTENT
    router.add_api_route(
        path,
        handler,
        methods=[method],
        name=name,
        summary=summary,
        status_code=status_code,
        response_model=None if no_body else endpoint.reply,
        response_class=Response if no_body else Default(JSONResponse),
        dependencies=dependencies,
    )
