"""The API's hottest call, reading one task (`GET /api/v1/tasks/{task_id}`, and its admin twin), served
without FastAPI's routing, per-request dependency solving and response model: under a read load those were
most of the gateway's CPU per request, for a route whose whole work is "who is calling, may they, then one
call to the scheduler".

Nothing is skipped that decides an answer: the caller is authenticated by `deps.principal_for` and held to
the route's own `access()` rule by `deps.enforce` (the rule is read from the route's declaration, so the two
cannot drift), rate limits and audit included; the service's errors answer as FastAPI's handlers answer
them. The scheduler's reply is validated as the endpoint's reply type (a reply that is not a task is a 500,
as before) and relayed as the bytes it sent, instead of being parsed into a model and serialised again.
Every middleware outside this one (request id, security headers, metrics by route template, CORS, body
limits) still applies, and this sets the route and path parameters in the scope as routing would.

Anything else, and any request this one would answer differently from the route (another method, an id
FastAPI would refuse, a root path, a gateway still starting), goes on to FastAPI unchanged."""

from __future__ import annotations

import dataclasses
from typing import Any

from browserfleet_contracts.endpoints import Endpoint
from browserfleet_core.errors import ServiceError
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .deps import ID_MAX_LENGTH, AccessRule, access_rules, bearer_token, client_ip, enforce, principal_for
from .errors import service_error_response
from .runtime import GatewayState

_JSON = (b"content-type", b"application/json")


@dataclasses.dataclass(frozen=True)
class HotRead:
    """A `GET <prefix>{id}` route whose whole work is one call of `endpoint` with the caller's actor and
    the id (as the request's `field`)."""

    route: APIRoute
    prefix: str
    param: str
    field: str
    rule: AccessRule
    endpoint: Endpoint[Any, Any]


# prefix -> the read served under it; filled as the routes are declared (`replies.hot_read_route`)
READS: dict[str, HotRead] = {}


def declare(route: APIRoute, endpoint: Endpoint[Any, Any]) -> None:
    """Serve `route` (a GET of one path parameter, last in its path, declared by `rpc_route`) here too."""
    head, brace, tail = route.path.rpartition("{")
    param = tail.removesuffix("}")
    if (
        not brace
        or not head.endswith("/")
        or "{" in head
        or not param.isidentifier()
        or route.methods != {"GET"}
    ):
        raise ValueError(f"{route.path}: not a GET with one trailing path parameter")
    rules = [rule for dep in route.dependant.dependencies if (rule := access_rules(dep.call)) is not None]
    if len(rules) != 1 or rules[0].public or rules[0].worker:
        raise ValueError(f"{route.path}: needs exactly one access() rule")
    field = param if param in endpoint.request.model_fields else "id"
    READS[head] = HotRead(route, head, param, field, rules[0], endpoint)


class HotReads:
    """ASGI middleware, innermost of the gateway's own: serves the `READS` routes itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.reads = dict(READS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = self._match(scope)
        state = getattr(scope["app"].state, "gateway", None) if read is not None else None
        if read is None or not isinstance(state, GatewayState) or state.rpc is None:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        ident = path[len(read.prefix) :]
        scope["route"] = read.route
        scope["path_params"] = {read.param: ident}
        conn = HTTPConnection(scope)
        try:
            principal = await principal_for(state, bearer_token(authorization_header(scope)), client_ip(conn))
            admitted, quota = await enforce(conn, state, read.rule, principal)
            request = read.endpoint.request(actor=admitted.actor, **{read.field: ident})
            body = await state.rpc.call_json(read.endpoint, request)
        except ServiceError as exc:
            await service_error_response(exc)(scope, receive, send)
            return
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        headers.extend((k.encode(), v.encode()) for k, v in quota.items())
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _match(self, scope: Scope) -> HotRead | None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        cut = path.rfind("/") + 1
        read = self.reads.get(path[:cut])
        # an id FastAPI's path parameter would refuse (422) is left to it, to answer exactly as it does
        if read is None or not 0 < len(path) - cut <= ID_MAX_LENGTH:
            return None
        return read


def authorization_header(scope: Scope) -> str | None:
    """The first Authorization header, as Starlette's `Headers.get` finds it."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            text: str = value.decode("latin-1")
            return text
    return None
