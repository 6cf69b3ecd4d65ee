"""Task submission (`POST /api/v1/tasks`, and its admin twin `POST /admin/tasks`) served without FastAPI's
routing, per-request dependency solving and endpoint machinery: under a burst of submissions those were a
large part of the gateway's CPU per task, for a route whose work is "read the body, who is calling, may they,
check what the task names, one call to the scheduler".

Every step the route takes is taken here, in the route's order, with the route's own parts, so that the
answers cannot drift from it:
- the body is read and parsed as FastAPI's request handler parses it (JSON only under a JSON content type;
  a body that does not decode is a 422 before anyone is asked who is calling, a body that cannot be read a
  400);
- the caller is authenticated by `deps.principal_for` and held to the route's own `access()` rule (read from
  its declaration) by `deps.enforce`: rate limit, audit entry committed before the scheduler is asked;
- then the `Idempotency-Key` header and the body are validated by the route's own FastAPI fields
  (`request_params_to_args`, `request_body_to_args`), so every 422 names the same fields in the same order;
- `intake.submit` does what the route's handler does, and the reply is validated and serialised by the
  route's own response field, with the route's status and headers (RateLimit-*, Location).
Errors answer as the app's exception handlers answer them; anything unexpected goes on to the edge's
last-resort 500, as it does from the route. Every middleware outside this one (request id and audit closing, security headers, metrics by route
template, CORS, body-size and JSON-depth limits) still applies, and this sets the route in the scope as
routing would.

Anything else (another path or method, a root path, a gateway still starting) goes on to FastAPI unchanged."""

from __future__ import annotations

import dataclasses
import email.message
import json
from typing import Any

from browserfleet_core.errors import ServiceError
from fastapi._compat import Undefined
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from . import intake
from .deps import AccessRule, access_rules, bearer_token, client_ip, enforce, principal_for
from .errors import error_for_status, error_json, service_error_response, validation_body
from .hotreads import authorization_header
from .runtime import GatewayState

_JSON = (b"content-type", b"application/json")
# what FastAPI's request handler answers when the body cannot be read or decoded (not JSON syntax)
_UNREADABLE = "There was an error parsing the body"


@dataclasses.dataclass(frozen=True)
class HotCreate:
    """A task-submission route (`tasks._add_submit_route`): its FastAPI route, for its fields and rule."""

    route: APIRoute
    rule: AccessRule
    location: str  # the prefix a created task's Location is under


# path -> the submission served at it; filled as the routes are declared
CREATES: dict[str, HotCreate] = {}


def declare(route: APIRoute, location: str) -> None:
    """Serve `route` (a task submission declared by `tasks._add_submit_route`) here too."""
    dependant = route.dependant
    rules = [rule for dep in dependant.dependencies if (rule := access_rules(dep.call)) is not None]
    if (
        route.methods != {"POST"}
        or "{" in route.path
        or len(rules) != 1
        or rules[0].public
        or rules[0].worker
        or len(dependant.body_params) != 1
        or dependant.query_params
        or dependant.cookie_params
        or route.body_field is None
        or route.response_field is None
        or route.status_code is None
    ):
        raise ValueError(f"{route.path}: not a task submission route")
    CREATES[route.path] = HotCreate(route, rules[0], location)


class HotCreates:
    """ASGI middleware, among the innermost of the gateway's own: serves the `CREATES` routes itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.creates = dict(CREATES)
        self._json_types: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        create = (
            self.creates.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path")
            else None
        )
        state = getattr(scope["app"].state, "gateway", None) if create is not None else None
        if create is None or not isinstance(state, GatewayState) or state.rpc is None:
            await self.app(scope, receive, send)
            return
        route = create.route
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        await self._serve(create, state, scope, receive, send)

    async def _serve(
        self, create: HotCreate, state: GatewayState, scope: Scope, receive: Receive, send: Send
    ) -> None:
        route = create.route
        dependant = route.dependant
        request = Request(scope, receive)
        assert state.rpc is not None
        try:
            payload = await self._payload(request)
            token = bearer_token(authorization_header(scope))
            principal = await principal_for(state, token, client_ip(request))
            admitted, quota = await enforce(request, state, create.rule, principal)
            header_values, errors = request_params_to_args(dependant.header_params, Headers(scope=scope))
            body_values, body_errors = await request_body_to_args(
                body_fields=dependant.body_params,
                received_body=payload,
                embed_body_fields=route._embed_body_fields,
            )
            errors.extend(body_errors)
            if errors:
                raise RequestValidationError(errors)
            js = state.nc.jetstream() if state.nc is not None else None
            (body_name,) = body_values
            (key,) = header_values.values()
            task = await intake.submit(state.rpc, js, admitted.actor, body_values[body_name], key)
        except ServiceError as exc:
            await service_error_response(exc)(scope, receive, send)
            return
        except RequestValidationError as exc:
            await error_json(validation_body(exc.errors()))(scope, receive, send)
            return
        except HTTPException as exc:
            message = exc.detail if isinstance(exc.detail, str) else None
            await error_json(error_for_status(exc.status_code, message))(scope, receive, send)
            return
        body = self._reply(route, task)
        headers = [(b"content-length", str(len(body)).encode()), _JSON]
        headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in quota.items())
        headers.append((b"location", f"{create.location}/{task.id}".encode("latin-1")))
        await send({"type": "http.response.start", "status": route.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _payload(self, request: Request) -> Any:
        """The body as FastAPI's request handler hands it to validation: parsed JSON under a JSON content
        type, the bytes under any other (or none: its strict content type), nothing when empty."""
        try:
            body = await request.body()
            if not body:
                return Undefined
            content_type = request.headers.get("content-type")
            if content_type and self._is_json(content_type):
                return json.loads(body)
            return body
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body", exc.pos),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": exc.msg},
                    }
                ],
                body=exc.doc,
            ) from exc
        except Exception as exc:
            raise HTTPException(status_code=400, detail=_UNREADABLE) from exc

    def _is_json(self, content_type: str) -> bool:
        """FastAPI's test of a JSON content type, remembered per header value (clients send a few)."""
        known = self._json_types.get(content_type)
        if known is None:
            message = email.message.Message()
            message["content-type"] = content_type
            subtype = message.get_content_subtype()
            known = message.get_content_maintype() == "application" and (
                subtype == "json" or subtype.endswith("+json")
            )
            if len(self._json_types) >= 256:
                self._json_types.clear()
            self._json_types[content_type] = known
        return known

    @staticmethod
    def _reply(route: APIRoute, task: Any) -> bytes:
        """The reply as the route's response model validates and serialises it."""
        field = route.response_field
        assert field is not None
        value, errors = field.validate(task, {}, loc=("response",))
        if errors:
            raise ValueError(f"{route.path}: the scheduler's reply is not its response model")
        body: bytes = field.serialize_json(
            value,
            include=route.response_model_include,
            exclude=route.response_model_exclude,
            by_alias=route.response_model_by_alias,
            exclude_unset=route.response_model_exclude_unset,
            exclude_defaults=route.response_model_exclude_defaults,
            exclude_none=route.response_model_exclude_none,
        )
        return body
